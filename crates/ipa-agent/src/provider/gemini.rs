//! Google Gemini: REST `generateContent` with `responseMimeType: application/json` and a `responseSchema`.

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{ChatReply, ChatRequest, Provider, ProviderError, RetryPolicy, post_json};
use crate::Secret;

#[derive(Debug)]
pub struct Gemini {
    http: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Secret,
    retry: RetryPolicy,
}

impl Gemini {
    pub fn new(http: reqwest::Client, base_url: &str, model: &str, api_key: Secret) -> Self {
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

    fn url(&self) -> String {
        // The key goes in the x-goog-api-key header, never in the URL (URLs end up in logs).
        format!(
            "{}/v1beta/models/{}:generateContent",
            self.base_url, self.model
        )
    }
}

/// The request body for one exchange.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut contents = vec![json!({"role": "user", "parts": [{"text": request.user}]})];
    if let Some(c) = &request.correction {
        contents.push(json!({"role": "model", "parts": [{"text": c.previous_reply}]}));
        contents.push(json!({"role": "user", "parts": [{"text": c.hint}]}));
    }
    let mut generation = json!({
        "temperature": 0,
        "maxOutputTokens": request.max_tokens,
        "candidateCount": 1,
    });
    if let Some(schema) = &request.schema {
        generation["responseMimeType"] = "application/json".into();
        generation["responseSchema"] = to_gemini_schema(schema);
    }
    // 2.5 Flash models think by default and thinking tokens count against maxOutputTokens; a bounded JSON
    // answer needs none.
    if model.contains("flash") {
        generation["thinkingConfig"] = json!({"thinkingBudget": 0});
    }
    json!({
        "systemInstruction": {"parts": [{"text": request.system}]},
        "contents": contents,
        "generationConfig": generation,
    })
}

/// Converts a JSON schema to the OpenAPI subset `responseSchema` accepts: upper-case types, no
/// `additionalProperties`/`$schema`/`title`, and `propertyOrdering` so fields come in the order we ask.
pub fn to_gemini_schema(schema: &Value) -> Value {
    const KEPT: [&str; 10] = [
        "enum",
        "required",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "description",
    ];
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        out.insert("type".into(), t.to_ascii_uppercase().into());
    }
    for key in KEPT {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let converted: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), to_gemini_schema(v)))
            .collect();
        // serde_json's map is sorted; `required` keeps the declaration order.
        let ordering = obj
            .get("required")
            .cloned()
            .unwrap_or_else(|| props.keys().cloned().collect::<Vec<_>>().into());
        out.insert("propertyOrdering".into(), ordering);
        out.insert("properties".into(), converted.into());
    }
    if let Some(items) = obj.get("items") {
        out.insert("items".into(), to_gemini_schema(items));
    }
    Value::Object(out)
}

/// Reads a `generateContent` answer.
pub fn parse_response(body: &Value) -> Result<ChatReply, ProviderError> {
    let usage = body.get("usageMetadata");
    let tokens = |key: &str| super::token_count(usage, key);
    let candidate = match body.get("candidates").and_then(Value::as_array) {
        Some(c) if !c.is_empty() => &c[0],
        _ => {
            return Err(
                match body
                    .pointer("/promptFeedback/blockReason")
                    .and_then(Value::as_str)
                {
                    Some(reason) => ProviderError::Blocked(format!("prompt blocked: {reason}")),
                    None => ProviderError::Empty("no candidates in the answer".into()),
                },
            );
        }
    };
    let finish = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("");
    match finish {
        "" | "STOP" | "FINISH_REASON_UNSPECIFIED" => {}
        "MAX_TOKENS" => return Err(ProviderError::Truncated("finishReason MAX_TOKENS".into())),
        other => return Err(ProviderError::Blocked(format!("finishReason {other}"))),
    }
    let text: String = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                // Thought summaries are not the answer.
                .filter(|p| !p.get("thought").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ProviderError::Empty("the candidate has no text".into()));
    }
    Ok(ChatReply {
        text,
        model: body
            .get("modelVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        prompt_tokens: tokens("promptTokenCount"),
        completion_tokens: tokens("candidatesTokenCount"),
    })
}

impl Provider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
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
            let answer = post_json(
                &self.http,
                &self.url(),
                &[("x-goog-api-key", &self.api_key)],
                &body,
                self.retry,
                Some(&self.api_key),
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
    fn schema_is_converted_to_the_openapi_subset() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
                "containers": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {"name": {"type": "string", "enum": ["app"]}}}},
            },
            "required": ["replicas", "containers"],
        });
        let g = to_gemini_schema(&schema);
        assert_eq!(g["type"], "OBJECT");
        assert!(g.get("additionalProperties").is_none());
        assert_eq!(g["properties"]["replicas"]["type"], "INTEGER");
        assert_eq!(
            g["properties"]["containers"]["items"]["properties"]["name"]["enum"],
            json!(["app"])
        );
        assert_eq!(g["propertyOrdering"], json!(["replicas", "containers"]));
    }

    #[test]
    fn the_retry_carries_the_rejected_reply_and_the_hint() {
        let request = ChatRequest {
            system: "sys".into(),
            user: "data".into(),
            schema: None,
            max_tokens: 100,
            correction: Some(super::super::Correction {
                previous_reply: "{bad".into(),
                hint: "fix it".into(),
            }),
        };
        let body = request_body("gemini-2.5-flash", &request);
        assert_eq!(body["contents"].as_array().map(Vec::len), Some(3));
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            0
        );
        assert!(body["generationConfig"].get("responseSchema").is_none());
    }
}
