//! LLM providers behind one trait: a chat exchange with an optional JSON schema for the reply.
//!
//! Providers only move text; parsing and validation stay in the core. The shared HTTP helper retries 429 and
//! 5xx answers (and connection failures) with exponential backoff, honouring `Retry-After` up to a cap.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::{Error, ProviderConfig, Secret};

pub mod gemini;
pub mod openai;

/// One exchange with the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub user: String,
    /// JSON schema the reply must follow, when the provider can enforce one.
    pub schema: Option<Value>,
    pub max_tokens: u32,
    /// The rejected previous reply and what was wrong with it (the one corrective retry).
    pub correction: Option<Correction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub previous_reply: String,
    pub hint: String,
}

/// The model's answer and its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

/// Why an exchange failed. Messages never contain credentials (they are redacted).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("timed out {0}")]
    Timeout(String),
    #[error("transport error: {0}")]
    Transport(String),
    /// The reply was cut at the token limit (`finish_reason: length` / `MAX_TOKENS`): invalid even under a schema.
    #[error("reply cut at the token limit ({0})")]
    Truncated(String),
    #[error("reply blocked by the provider: {0}")]
    Blocked(String),
    #[error("no reply: {0}")]
    Empty(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ProviderError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "transport",
            Self::Truncated(_) => "truncated",
            Self::Blocked(_) => "blocked",
            Self::Empty(_) => "empty",
            Self::Decode(_) => "decode",
        }
    }

    /// Partial replies (cut at the token limit) deserve the corrective retry; other failures go to the fallback.
    pub fn is_retryable_reply(&self) -> bool {
        matches!(self, Self::Truncated(_))
    }
}

/// An LLM provider.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// `gemini` or `openai`.
    fn name(&self) -> &'static str;
    /// The configured model.
    fn model(&self) -> &str;
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatReply, ProviderError>>;
}

/// Builds the provider for a configuration (`None` for the built-in recommender).
pub fn build(
    config: &ProviderConfig,
    timeout: Duration,
) -> Result<Option<Box<dyn Provider>>, Error> {
    let http = || http_client(timeout);
    Ok(match config {
        ProviderConfig::Builtin => None,
        ProviderConfig::Gemini {
            api_key,
            model,
            base_url,
        } => Some(Box::new(gemini::Gemini::new(
            http()?,
            base_url,
            model,
            api_key.clone(),
        ))),
        ProviderConfig::OpenAi {
            api_key,
            model,
            base_url,
        } => Some(Box::new(openai::OpenAi::new(
            http()?,
            base_url,
            model,
            api_key.clone(),
        ))),
    })
}

/// The HTTP client providers use: rustls with the ring provider, a per-request timeout.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, Error> {
    // reqwest is built without a default crypto provider; install ring once (a second call is a no-op error).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("ipa-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Client(e.to_string()))
}

/// Largest provider answer read (a reply is a few kB; a chat answer with a long rationale tens of kB).
pub const MAX_PROVIDER_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Reads a body as text, at most `max` bytes: a larger `Content-Length` is refused before reading, a chunked body
/// as soon as it passes the cap. Invalid UTF-8 is replaced, as `Response::text` does.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<String, String> {
    let too_large = || format!("provider answer larger than {max} bytes");
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body =
        Vec::with_capacity(response.content_length().unwrap_or(0).min(max as u64) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Backoff for 429/5xx/connection failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
        }
    }
}

/// POSTs `body` as JSON and returns the decoded JSON answer of a 2xx, retrying 429/5xx and connection errors.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &Secret)],
    body: &Value,
    retry: RetryPolicy,
    redact: Option<&Secret>,
) -> Result<Value, ProviderError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client.post(url).json(body);
        for (name, value) in headers {
            request = request.header(*name, value.expose());
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = read_capped(response, MAX_PROVIDER_BODY_BYTES)
                    .await
                    .map_err(|e| ProviderError::Transport(redacted(&e, redact)))?;
                if status.is_success() {
                    return serde_json::from_str(&text)
                        .map_err(|e| ProviderError::Decode(format!("body is not JSON: {e}")));
                }
                let error = ProviderError::Status {
                    status: status.as_u16(),
                    message: redacted(&error_message(&text), redact),
                };
                let retryable = status.as_u16() == 429 || status.is_server_error();
                (error, retryable, retry_after)
            }
            Err(e) if e.is_timeout() => {
                return Err(ProviderError::Timeout(
                    "waiting for the provider's answer".into(),
                ));
            }
            Err(e) => {
                // Only failures to connect are safe to repeat; a request that may have reached the model is not.
                let retryable = e.is_connect();
                (
                    ProviderError::Transport(redacted(&e.to_string(), redact)),
                    retryable,
                    None,
                )
            }
        };
        let (error, retryable, retry_after) = outcome;
        if !retryable || attempt >= retry.attempts {
            return Err(error);
        }
        let backoff = retry
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(retry.max_delay);
        let delay = retry_after.map_or(backoff, |d| d.min(retry.max_delay));
        tracing::warn!(%error, attempt, delay_ms = delay.as_millis() as u64, "provider call failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The human-readable message of a provider's error body (`{"error": {"message": ..}}` or the text), shortened.
/// A token count from a provider's usage object (`usage` / `usageMetadata`), saturated to `u32`.
pub(crate) fn token_count(usage: Option<&Value>, key: &str) -> Option<u32> {
    usage
        .and_then(|u| u.get(key))
        .and_then(Value::as_u64)
        .map(|v| v.min(u64::from(u32::MAX)) as u32)
}

fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| v.get("error").and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| body.to_string());
    ipa_core::prompt::sanitize_text(&message, 300)
}

/// Removes a secret from a message (error bodies and URLs could echo it).
fn redacted(message: &str, secret: Option<&Secret>) -> String {
    match secret {
        Some(s) if !s.expose().is_empty() => message.replace(s.expose(), "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted_and_redacted() {
        let body = r#"{"error": {"code": 400, "message": "API key abc123 not valid", "status": "INVALID_ARGUMENT"}}"#;
        let msg = redacted(&error_message(body), Some(&Secret::new("abc123")));
        assert_eq!(msg, "API key *** not valid");
        assert_eq!(error_message("plain failure"), "plain failure");
    }

    #[test]
    fn kinds_are_stable_labels() {
        let e = ProviderError::Status {
            status: 429,
            message: String::new(),
        };
        assert_eq!(e.kind(), "rate_limited");
        assert!(ProviderError::Truncated("length".into()).is_retryable_reply());
    }
}
