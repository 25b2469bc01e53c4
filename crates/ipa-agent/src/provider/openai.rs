//! OpenAI-compatible chat completions (llama.cpp's llama-server, Ollama, vLLM, OpenAI) with
//! `response_format: {"type": "json_schema", ...}`.

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{ChatReply, ChatRequest, Provider, ProviderError, RetryPolicy, post_json};
use crate::Secret;

#[derive(Debug)]
pub struct OpenAi {
    http: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    retry: RetryPolicy,
}

impl OpenAi {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        model: &str,
        api_key: Option<Secret>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// The request body for one exchange.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": request.system}),
        json!({"role": "user", "content": request.user}),
    ];
    if let Some(c) = &request.correction {
        messages.push(json!({"role": "assistant", "content": c.previous_reply}));
        messages.push(json!({"role": "user", "content": c.hint}));
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": request.max_tokens,
        "stream": false,
    });
    if let Some(schema) = &request.schema {
        // Not `json_object`: it only forces "some object", and small models then ramble until the token limit.
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": "recommendation", "strict": true, "schema": schema},
        });
    }
    body
}

/// Reads a chat-completions answer.
pub fn parse_response(body: &Value) -> Result<ChatReply, ProviderError> {
    let choice = match body.get("choices").and_then(Value::as_array) {
        Some(c) if !c.is_empty() => &c[0],
        _ => return Err(ProviderError::Empty("no choices in the answer".into())),
    };
    match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => return Err(ProviderError::Truncated("finish_reason length".into())),
        Some("content_filter") => {
            return Err(ProviderError::Blocked(
                "finish_reason content_filter".into(),
            ));
        }
        _ => {}
    }
    let message = choice.get("message");
    if let Some(refusal) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
    {
        return Err(ProviderError::Blocked(ipa_core::prompt::sanitize_text(
            refusal, 200,
        )));
    }
    let text = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ProviderError::Empty("the message has no content".into()));
    }
    let usage = body.get("usage");
    let tokens = |key: &str| super::token_count(usage, key);
    Ok(ChatReply {
        text: text.to_string(),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        async move {
            let body = request_body(&self.model, request);
            let url = format!("{}/chat/completions", self.base_url);
            let auth = self
                .api_key
                .as_ref()
                .map(|k| Secret::new(format!("Bearer {}", k.expose())));
            let headers: Vec<(&str, &Secret)> = auth.iter().map(|a| ("authorization", a)).collect();
            let answer = post_json(
                &self.http,
                &url,
                &headers,
                &body,
                self.retry,
                self.api_key.as_ref(),
            )
            .await?;
            let mut reply = parse_response(&answer)?;
            reply.model.get_or_insert_with(|| self.model.clone());
            Ok(reply)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_goes_in_response_format() {
        let request = ChatRequest {
            system: "s".into(),
            user: "u".into(),
            schema: Some(json!({"type": "object"})),
            max_tokens: 64,
            correction: None,
        };
        let body = request_body("m", &request);
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["type"],
            "object"
        );
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
        let no_schema = ChatRequest {
            schema: None,
            ..request
        };
        assert!(
            request_body("m", &no_schema)
                .get("response_format")
                .is_none()
        );
    }
}
