//! One decision: prompt → provider → strict parse → (one corrective retry) → recommendation, or the built-in
//! recommendation when no LLM is configured or the LLM failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipa_core::prompt::{self, Prompt};
use ipa_core::reply::{self, ReplyError};
use ipa_core::{MetricsSnapshot, Policy, Recommendation, ResolvedPolicy, Source};
use serde::Serialize;

use crate::provider::{ChatReply, ChatRequest, Correction, Provider, ProviderError};
use crate::{Config, Error};

/// Turns snapshots into recommendations with the configured provider.
#[derive(Debug, Clone)]
pub struct Engine {
    provider: Option<Arc<dyn Provider>>,
    use_schema: bool,
    max_tokens: u32,
    timeout: Duration,
}

/// One exchange with the model, as recorded in the decision log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The raw reply, when there was one.
    pub reply: Option<String>,
    /// What was wrong with it (parse error or provider error).
    pub error: Option<String>,
    pub latency_ms: u64,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

/// A decision and how it came about.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub recommendation: Recommendation,
    pub prompt: Prompt,
    pub attempts: Vec<Attempt>,
    /// Why the built-in recommendation was used instead of the LLM's, when it was.
    pub fallback_reason: Option<String>,
    /// Provider errors by metric label, for `/metrics`.
    pub provider_errors: Vec<&'static str>,
}

enum Failure {
    Provider(ProviderError),
    Reply { reply: String, error: ReplyError },
}

impl Engine {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let provider = crate::provider::build(&config.provider, config.timeout)?.map(Arc::from);
        Ok(Self {
            provider,
            use_schema: config.use_schema,
            max_tokens: config.max_tokens,
            timeout: config.timeout,
        })
    }

    /// An engine with a given provider (tests use providers pointed at local stubs).
    pub fn with_provider(provider: Option<Arc<dyn Provider>>, config: &Config) -> Self {
        Self {
            provider,
            use_schema: config.use_schema,
            max_tokens: config.max_tokens,
            timeout: config.timeout,
        }
    }

    pub fn provider_name(&self) -> &'static str {
        self.provider.as_ref().map_or("builtin", |p| p.name())
    }

    pub fn model_name(&self) -> Option<&str> {
        self.provider.as_ref().map(|p| p.model())
    }

    /// Decides for one snapshot. Never fails: the worst case is the built-in recommendation marked `fallback`.
    pub async fn decide(&self, snapshot: &MetricsSnapshot, policy: &Policy) -> Outcome {
        let started = Instant::now();
        let resolved = policy.resolve();
        let prompt = prompt::build(snapshot, &resolved);
        let Some(provider) = &self.provider else {
            let mut recommendation = ipa_core::recommend(snapshot, &resolved);
            recommendation.source = Source::Builtin;
            recommendation.latency_ms = Some(elapsed_ms(started));
            return Outcome {
                recommendation,
                prompt,
                attempts: Vec::new(),
                fallback_reason: None,
                provider_errors: Vec::new(),
            };
        };
        let mut request = ChatRequest {
            system: prompt.system.clone(),
            user: prompt.user.clone(),
            schema: self
                .use_schema
                .then(|| prompt::reply_schema(snapshot, &resolved)),
            max_tokens: self.max_tokens,
            correction: None,
        };
        let mut attempts = Vec::new();
        let mut provider_errors = Vec::new();
        let mut failure = None;
        for round in 0..2 {
            match self
                .attempt(
                    provider.as_ref(),
                    &request,
                    snapshot,
                    &resolved,
                    &mut attempts,
                )
                .await
            {
                Ok(mut recommendation) => {
                    recommendation.latency_ms = Some(elapsed_ms(started));
                    sum_tokens(&mut recommendation, &attempts);
                    return Outcome {
                        recommendation,
                        prompt,
                        attempts,
                        fallback_reason: None,
                        provider_errors,
                    };
                }
                Err(Failure::Reply { reply, error }) if round == 0 => {
                    request.correction = Some(Correction {
                        previous_reply: ipa_core::prompt::sanitize_text(&reply, 2000),
                        hint: error.retry_hint(),
                    });
                    failure = Some(format!("invalid reply: {error}"));
                }
                Err(Failure::Provider(error)) if round == 0 && error.is_retryable_reply() => {
                    provider_errors.push(error.kind());
                    request.correction = Some(Correction {
                        previous_reply: String::new(),
                        hint: format!(
                            "Your previous reply was rejected: {error}. Reply with one short JSON object only \
                             and keep the rationale to a few words."
                        ),
                    });
                    failure = Some(error.to_string());
                }
                Err(Failure::Reply { error, .. }) => {
                    failure = Some(format!("invalid reply after one retry: {error}"));
                    break;
                }
                Err(Failure::Provider(error)) => {
                    provider_errors.push(error.kind());
                    failure = Some(if round == 0 {
                        format!("{} provider failed: {error}", provider.name())
                    } else {
                        format!("{} provider failed on the retry: {error}", provider.name())
                    });
                    break;
                }
            }
        }
        let reason = failure.unwrap_or_else(|| "no valid reply".into());
        let mut recommendation = ipa_core::recommend(snapshot, &resolved);
        recommendation.source = Source::Fallback;
        recommendation.rationale = if recommendation.rationale.is_empty() {
            format!("LLM not used ({reason}); built-in recommendation")
        } else {
            format!(
                "LLM not used ({reason}); built-in: {}",
                recommendation.rationale
            )
        };
        recommendation.model = Some(provider.model().to_string());
        recommendation.latency_ms = Some(elapsed_ms(started));
        sum_tokens(&mut recommendation, &attempts);
        tracing::warn!(target = %snapshot.target, %reason, "falling back to the built-in recommendation");
        Outcome {
            recommendation,
            prompt,
            attempts,
            fallback_reason: Some(reason),
            provider_errors,
        }
    }

    async fn attempt(
        &self,
        provider: &dyn Provider,
        request: &ChatRequest,
        snapshot: &MetricsSnapshot,
        policy: &ResolvedPolicy,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Recommendation, Failure> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, provider.complete(request)).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Timeout(format!("after {:?}", self.timeout))),
        };
        let latency_ms = elapsed_ms(started);
        match result {
            Err(error) => {
                attempts.push(Attempt {
                    reply: None,
                    error: Some(error.to_string()),
                    latency_ms,
                    prompt_tokens: None,
                    completion_tokens: None,
                });
                Err(Failure::Provider(error))
            }
            Ok(ChatReply {
                text,
                model,
                prompt_tokens,
                completion_tokens,
            }) => {
                let parsed = reply::parse_reply(&text, snapshot, policy);
                attempts.push(Attempt {
                    reply: Some(text.clone()),
                    error: parsed.as_ref().err().map(ToString::to_string),
                    latency_ms,
                    prompt_tokens,
                    completion_tokens,
                });
                match parsed {
                    Ok(mut rec) => {
                        rec.model = model.or_else(|| Some(provider.model().to_string()));
                        Ok(rec)
                    }
                    Err(error) => Err(Failure::Reply { reply: text, error }),
                }
            }
        }
    }
}

fn sum_tokens(rec: &mut Recommendation, attempts: &[Attempt]) {
    let sum = |f: fn(&Attempt) -> Option<u32>| {
        attempts
            .iter()
            .filter_map(f)
            .fold(None, |acc: Option<u32>, v| {
                Some(acc.unwrap_or(0).saturating_add(v))
            })
    };
    rec.prompt_tokens = sum(|a| a.prompt_tokens);
    rec.completion_tokens = sum(|a| a.completion_tokens);
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
}
