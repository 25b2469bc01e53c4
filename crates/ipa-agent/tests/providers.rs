//! Provider wire formats against recorded answers replayed by a local stub server (wiremock on 127.0.0.1),
//! through the real reqwest code path, and the engine's retry/fallback behaviour on top of them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ipa_agent::provider::gemini::Gemini;
use ipa_agent::provider::openai::OpenAi;
use ipa_agent::provider::{ChatRequest, Provider, ProviderError, RetryPolicy, http_client};
use ipa_agent::{Config, Engine, Secret};
use ipa_core::{Policy, Rule, Source};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GEMINI_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const KEY: &str = "test-key-0123456789";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn json_response(status: u16, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(common::fixture(name), "application/json")
}

fn gemini(server: &MockServer) -> Result<Gemini, ipa_agent::Error> {
    Ok(Gemini::new(
        http_client(Duration::from_secs(5))?,
        &server.uri(),
        "gemini-2.5-flash",
        Secret::new(KEY),
    )
    .with_retry(fast_retry()))
}

fn openai(server: &MockServer, key: Option<&str>) -> Result<OpenAi, ipa_agent::Error> {
    Ok(OpenAi::new(
        http_client(Duration::from_secs(5))?,
        &format!("{}/v1", server.uri()),
        "gemma-3-270m-q4_k_m",
        key.map(Secret::new),
    )
    .with_retry(fast_retry()))
}

fn request() -> ChatRequest {
    ChatRequest {
        system: "sys".into(),
        user: "data".into(),
        schema: Some(serde_json::json!({"type": "object"})),
        max_tokens: 256,
        correction: None,
    }
}

fn engine(provider: impl Provider + 'static) -> Engine {
    Engine::with_provider(Some(Arc::new(provider)), &Config::builtin())
}

async fn requests_made(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn gemini_success_is_an_llm_recommendation() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", KEY))
        .and(body_partial_json(serde_json::json!({
            "generationConfig": {"responseMimeType": "application/json", "temperature": 0}
        })))
        .respond_with(json_response(200, "gemini_success.json"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = engine(gemini(&server)?)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    let rec = &outcome.recommendation;
    assert_eq!(rec.source, Source::Llm, "{outcome:?}");
    assert_eq!(rec.replicas, 4);
    assert_eq!(rec.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens),
        (Some(312), Some(71))
    );
    assert_eq!(rec.containers[0].requests.cpu.map(|c| c.0), Some(300));
    // The key travels in the header only, never in the URL.
    let sent = server.received_requests().await.unwrap_or_default();
    assert!(!sent[0].url.as_str().contains(KEY));
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body)?;
    assert_eq!(body["generationConfig"]["responseSchema"]["type"], "OBJECT");
    assert!(
        body["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Bounds:")
    );
    Ok(())
}

#[tokio::test]
async fn gemini_400_is_not_retried_and_the_key_is_redacted() -> TestResult {
    let server = MockServer::start().await;
    let body = common::fixture("gemini_400.json")
        .replace("API key not valid", &format!("API key {KEY} not valid"));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let err = gemini(&server)?.complete(&request()).await.err();
    match &err {
        Some(ProviderError::Status {
            status: 400,
            message,
        }) => {
            assert!(message.contains("not valid"));
            assert!(!message.contains(KEY), "{message}");
        }
        other => return Err(format!("expected a 400, got {other:?}").into()),
    }
    assert_eq!(requests_made(&server).await, 1);
    Ok(())
}

#[tokio::test]
async fn gemini_429_and_500_are_retried_with_backoff_then_fail() -> TestResult {
    for (status, fixture) in [(429, "gemini_429.json"), (500, "gemini_500.json")] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(json_response(status, fixture))
            .mount(&server)
            .await;
        let err = gemini(&server)?.complete(&request()).await.err();
        assert!(
            matches!(err, Some(ProviderError::Status { status: s, .. }) if s == status),
            "{err:?}"
        );
        assert_eq!(requests_made(&server).await, 3, "status {status}");
    }
    Ok(())
}

#[tokio::test]
async fn gemini_429_then_success_recovers() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(429, "gemini_429.json").insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(json_response(200, "gemini_success.json"))
        .mount(&server)
        .await;
    let reply = gemini(&server)?.complete(&request()).await?;
    assert!(reply.text.contains("\"replicas\": 4"));
    assert_eq!(requests_made(&server).await, 2);
    Ok(())
}

#[tokio::test]
async fn gemini_empty_and_blocked_answers_are_errors() -> TestResult {
    for (fixture, expect_blocked) in [
        ("gemini_empty_candidates.json", false),
        ("gemini_safety.json", true),
        ("gemini_prompt_blocked.json", true),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(json_response(200, fixture))
            .mount(&server)
            .await;
        let err = gemini(&server)?.complete(&request()).await.err();
        match (expect_blocked, &err) {
            (true, Some(ProviderError::Blocked(_))) | (false, Some(ProviderError::Empty(_))) => {}
            _ => return Err(format!("{fixture}: unexpected {err:?}").into()),
        }
        // The engine turns it into a clean fallback with the reason.
        let outcome = engine(gemini(&server)?)
            .decide(&common::snapshot("web"), &Policy::default())
            .await;
        assert_eq!(outcome.recommendation.source, Source::Fallback);
        assert!(outcome.recommendation.rationale.starts_with("LLM not used"));
        assert!(outcome.fallback_reason.is_some());
    }
    Ok(())
}

#[tokio::test]
async fn openai_success_recorded_from_llama_server() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", &*format!("Bearer {KEY}")))
        .and(body_partial_json(serde_json::json!({
            "response_format": {"type": "json_schema"}, "temperature": 0
        })))
        .respond_with(json_response(200, "openai_success.json"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = engine(openai(&server, Some(KEY))?)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    let rec = &outcome.recommendation;
    assert_eq!(rec.source, Source::Llm, "{outcome:?}");
    assert_eq!(rec.model.as_deref(), Some("gemma-3-270m-q4_k_m"));
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens),
        (Some(82), Some(110))
    );
    // The recorded reply asks for "0m" CPU and "0000000Mi" memory: clamped into the policy, and said so.
    assert_eq!(rec.containers[0].requests.cpu.map(|c| c.0), Some(10));
    assert!(rec.notes.iter().any(|n| n.rule == Rule::ReplyClamped));
    Ok(())
}

#[tokio::test]
async fn openai_length_cut_is_retried_once_then_falls_back() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(200, "openai_length.json"))
        .mount(&server)
        .await;
    let err = openai(&server, None)?.complete(&request()).await.err();
    assert!(matches!(err, Some(ProviderError::Truncated(_))), "{err:?}");
    let outcome = engine(openai(&server, None)?)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    assert_eq!(outcome.recommendation.source, Source::Fallback);
    assert_eq!(outcome.attempts.len(), 2);
    assert!(
        outcome
            .fallback_reason
            .unwrap_or_default()
            .contains("token limit")
    );
    // Without a key there is no Authorization header at all.
    let sent = server.received_requests().await.unwrap_or_default();
    assert!(
        sent.iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    Ok(())
}

#[tokio::test]
async fn openai_429_and_500_are_retried_then_fall_back() -> TestResult {
    for (status, fixture) in [(429, "openai_429.json"), (500, "openai_500.json")] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(json_response(status, fixture))
            .mount(&server)
            .await;
        let outcome = engine(openai(&server, Some(KEY))?)
            .decide(&common::snapshot("web"), &Policy::default())
            .await;
        assert_eq!(outcome.recommendation.source, Source::Fallback);
        assert_eq!(requests_made(&server).await, 3, "status {status}");
        assert!(
            outcome
                .fallback_reason
                .unwrap_or_default()
                .contains(&format!("HTTP {status}"))
        );
    }
    Ok(())
}

fn chat_answer(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "choices": [{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": content}}],
        "model": "stub-model",
        "usage": {"prompt_tokens": 100, "completion_tokens": 20},
    }))
}

#[tokio::test]
async fn an_invalid_reply_gets_one_corrective_retry() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(chat_answer(r#"{"replicas": "lots"}"#))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(chat_answer(
            r#"{"replicas": 5, "containers": [], "rationale": "more pods"}"#,
        ))
        .mount(&server)
        .await;
    let outcome = engine(openai(&server, None)?)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    assert_eq!(outcome.recommendation.source, Source::Llm);
    assert_eq!(outcome.recommendation.replicas, 5);
    assert_eq!(
        outcome.recommendation.prompt_tokens,
        Some(200),
        "tokens of both attempts"
    );
    let sent = server.received_requests().await.unwrap_or_default();
    assert_eq!(sent.len(), 2);
    let retry: serde_json::Value = serde_json::from_slice(&sent[1].body)?;
    let messages = retry["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["role"], "assistant");
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("\"replicas\" must be an integer")
    );
    Ok(())
}

#[tokio::test]
async fn two_invalid_replies_fall_back_with_the_reason() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(chat_answer("I would scale to about a dozen pods."))
        .mount(&server)
        .await;
    let outcome = engine(openai(&server, None)?)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    assert_eq!(outcome.recommendation.source, Source::Fallback);
    assert_eq!(outcome.attempts.len(), 2);
    let reason = outcome.fallback_reason.unwrap_or_default();
    assert!(
        reason.contains("after one retry") && reason.contains("no JSON"),
        "{reason}"
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_provider_hits_the_timeout_and_falls_back() -> TestResult {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(chat_answer("{}").set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let config = Config {
        timeout: Duration::from_millis(200),
        ..Config::builtin()
    };
    let provider = openai(&server, None)?;
    let outcome = Engine::with_provider(Some(Arc::new(provider)), &config)
        .decide(&common::snapshot("web"), &Policy::default())
        .await;
    assert_eq!(outcome.recommendation.source, Source::Fallback);
    assert!(
        outcome
            .fallback_reason
            .unwrap_or_default()
            .contains("timed out")
    );
    Ok(())
}

#[tokio::test]
async fn both_protocols_work_through_the_router_with_gemini() -> TestResult {
    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(json_response(200, "gemini_success.json"))
        .mount(&server)
        .await;
    let state = ipa_agent::AppState::with_engine(Config::builtin(), engine(gemini(&server)?))?;
    let app = ipa_agent::router(state);
    let call = |uri: &str, body: serde_json::Value| {
        let app = app.clone();
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()));
        async move {
            let response = app.oneshot(request?).await?;
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<serde_json::Value, Box<dyn std::error::Error>>(serde_json::from_slice(&bytes)?)
        }
    };
    let ours = call(
        "/v1/recommend",
        serde_json::json!({"snapshot": common::snapshot("web")}),
    )
    .await?;
    assert_eq!(ours["source"], "llm", "{ours}");
    assert_eq!(ours["replicas"], 4);
    assert_eq!(ours["model"], "gemini-2.5-flash");
    let seed = call(
        "/askllm",
        serde_json::json!({"metrics": "Deployment Replicas-\nPromQL: kube_deployment_spec_replicas{deployment=web, namespace=shop} Metrics: {status:success,data:{resultType:matrix,result:[{metric:{},values:[[1,3],[61,3]]}]}}\nResource requests and limits-\nCPU Resource Requests: 250m, CPU Resource Limits: 500m, Memory Resource Requests: 256Mi, Memory Resource Limits: 512Mi\n"}),
    )
    .await?;
    assert_eq!(seed["status"], "success", "{seed}");
    // The seed's answer is the guarded decision: this text has no CPU usage, so nothing supports the model's 4.
    assert_eq!(seed["text"]["replicas"], 3);
    assert!(
        seed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gemini"),
        "{seed}"
    );
    // The stub names container "app"; the seed's single container is "main": its resources stay as they are.
    assert_eq!(seed["text"]["cpu_request"], "250m");
    Ok(())
}

#[tokio::test]
async fn the_concurrency_limit_spans_both_protocols() -> TestResult {
    use axum::body::Body;
    use axum::http::{Request, header};
    use tower::ServiceExt as _;

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            chat_answer(r#"{"replicas": 2, "containers": [], "rationale": "ok"}"#)
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&server)
        .await;
    let config = Config {
        max_concurrency: 1,
        ..Config::builtin()
    };
    let state = ipa_agent::AppState::with_engine(
        config.clone(),
        Engine::with_provider(Some(Arc::new(openai(&server, None)?)), &config),
    )?;
    let app = ipa_agent::router(state);
    let request = |uri: &str, body: String| {
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
    };
    let v1 = request(
        "/v1/recommend",
        serde_json::json!({"snapshot": common::snapshot("web")}).to_string(),
    )?;
    let seed = request("/askllm", serde_json::json!({"metrics": ""}).to_string())?;
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(app.clone().oneshot(v1), app.clone().oneshot(seed));
    assert_eq!(a?.status(), 200);
    assert_eq!(b?.status(), 200);
    // One at a time: the two 300 ms exchanges cannot overlap.
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
