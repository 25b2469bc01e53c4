//! Stage 3 of a cycle: the advisory loop. Once per `interval` the agent is asked about every found target in a
//! task of its own; the cycle waits for it only briefly, and answers that come later serve the next fast
//! cycle. Fast cycles ask nobody, read no Secret and copy no snapshot.

pub mod advisory;
pub mod agent;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use ipa_core::{MetricsSnapshot, RecommendRequest, Recommendation, TargetRef};
use kube::ResourceExt;
use tracing::warn;

use crate::clock::parse_rfc3339;
use crate::crd::{IPA, IpaGroup, IpaStatus};
use crate::read::cluster::{self, Kube};
use crate::reconcile::Context;
use crate::summarize::Summary;
use advisory::{Advisories, Answer};
use agent::AgentClient;

/// What the advisory side brought one target this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// A fast cycle: nobody was asked.
    Nothing,
    /// The advisory cycle without an agent: the built-in advises.
    Builtin,
    /// The agent's proposal.
    Proposal(Recommendation),
    /// Asking the agent failed (the detail is in the controller's log).
    Failed(String),
}

/// The cycle's advice, per target.
#[derive(Debug, Default)]
pub struct Advice {
    /// This cycle is the advisory one (once per interval).
    pub due: bool,
    with_agent: bool,
    answers: HashMap<TargetRef, Answer>,
}

impl Advice {
    /// What the advisory side says about `target` (each answer is used once).
    pub fn take(&mut self, target: &TargetRef) -> Asked {
        match self.answers.remove(target) {
            Some(Ok(rec)) => Asked::Proposal(rec),
            Some(Err(e)) => Asked::Failed(e),
            None if self.due && !self.with_agent => Asked::Builtin,
            None => Asked::Nothing,
        }
    }
}

/// What status says when the agent failed: no URL, status code or error text (see [`ask_one`]).
pub const AGENT_FAILED: &str =
    "agent request failed or its reply was invalid (see controller logs)";

pub fn with_agent(ipa: &IPA) -> bool {
    !ipa.spec.metadata.llm_agent.trim().is_empty()
}

/// Starts the advisory ask when it is due, waits for it briefly, and takes every answer that has arrived.
pub async fn ask(
    ctx: &Context,
    ipa: &IPA,
    previous: &IpaStatus,
    summary: &Summary,
    now: i64,
) -> Advice {
    let spec = &ipa.spec.metadata;
    let key = format!("{}/{}", ipa.namespace().unwrap_or_default(), ipa.name_any());
    let last_advice = previous.last_advice_time.as_deref().and_then(parse_rfc3339);
    let due = advisory::due(last_advice, spec.interval(), now);
    let with_agent = with_agent(ipa);
    if due && with_agent && !summary.found.is_empty() && ctx.advisories.start(&key) {
        let agent_url = ctx.urls.check(&spec.llm_agent).ok();
        let token = agent_token(ctx, ipa, agent_url.as_ref()).await;
        // Owned inputs: the task outlives this cycle.
        let requests = summary
            .found
            .iter()
            .zip(&summary.snapshots)
            .map(|(f, snap)| (spec.ipa_group[f.index].clone(), snap.clone()))
            .collect();
        let asking = ask_all(
            AskAll {
                agent: ctx.agent.clone(),
                advisories: ctx.advisories.clone(),
                key: key.clone(),
                agent_url: spec.llm_agent.clone(),
                token,
                concurrency: ctx.settings.agent_concurrency.max(1),
            },
            requests,
        );
        let _ = tokio::time::timeout(advisory::WAIT_FOR_ANSWERS, tokio::spawn(asking)).await;
    }
    Advice {
        due,
        with_agent,
        answers: ctx.advisories.take(&key),
    }
}

/// The bearer token for the IPA's agent: the IPA's own Secret when it names one, else the install's token when
/// (and only when) the IPA's agent is the agent installed with the controller.
async fn agent_token(ctx: &Context, ipa: &IPA, agent: Option<&reqwest::Url>) -> Option<String> {
    let Some(r) = ipa.spec.metadata.agent_token_secret_ref.as_ref() else {
        return agent
            .filter(|url| ctx.urls.is_install_agent(url))
            .and_then(|_| ctx.install_token.clone());
    };
    let kube = Kube {
        client: &ctx.client,
        metrics: &ctx.metrics,
    };
    cluster::secret_value(kube, &ipa.namespace()?, &r.name, &r.key).await
}

/// Where and how one IPA's targets are asked about.
struct AskAll {
    agent: AgentClient,
    advisories: Arc<Advisories>,
    /// The IPA's `namespace/name`.
    key: String,
    agent_url: String,
    token: Option<String>,
    concurrency: usize,
}

/// Asks the agent for every target of one IPA, storing each answer as it comes for the next cycle to use.
async fn ask_all(to: AskAll, requests: Vec<(IpaGroup, MetricsSnapshot)>) {
    futures::stream::iter(requests)
        .map(|(group, snap)| {
            let (agent, url, token) = (&to.agent, &to.agent_url, to.token.as_deref());
            async move {
                let answer = ask_one(agent, url, token, &group, &snap).await;
                (snap.target, answer)
            }
        })
        .buffer_unordered(to.concurrency)
        .for_each(|(target, answer)| {
            to.advisories.put(&to.key, target, answer);
            std::future::ready(())
        })
        .await;
    to.advisories.finish(&to.key);
}

/// Asks the agent about one target: its proposal, or what status may say about its failure (the built-in then
/// stands in, in the core).
async fn ask_one(
    agent: &AgentClient,
    agent_url: &str,
    token: Option<&str>,
    group: &IpaGroup,
    snapshot: &MetricsSnapshot,
) -> Answer {
    let request = RecommendRequest {
        snapshot: snapshot.clone(),
        policy: group.policy.clone(),
    };
    agent
        .recommend(agent_url, token, &request)
        .await
        .map_err(|e| {
            // The detail (URL, HTTP status, reply) goes to the log only, never to status or Events.
            warn!(target = %snapshot.target, error = %e, "agent failed; built-in recommender used");
            AGENT_FAILED.to_string()
        })
}
