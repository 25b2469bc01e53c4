//! The agent's JSON request bodies, through its real router (in process, no socket): `POST /v1/recommend`
//! (`{"snapshot", "policy"}`) and `POST /askllm` (`{"metrics": "<text>"}`), with the built-in recommender.
//! Whatever the body, the answer is a 2xx or a 4xx — never a 5xx, never a panic — and a 200 carries a
//! recommendation within the request's policy, or the seed's four quantity strings with limit ≥ request.
#![no_main]

use std::sync::OnceLock;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use ipa_agent::{AppState, Config, router};
use ipa_core::{RecommendRequest, Recommendation, SeedResponse};
use ipa_fuzz::{assert_containers_within, assert_replicas_within, assert_seed_answer_sane};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

struct Agent {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let state = AppState::new(Config::builtin()).unwrap_or_else(|e| panic!("agent: {e}"));
        Agent {
            runtime,
            router: router(state),
        }
    })
}

fn post(route: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let agent = agent();
    let request = Request::post(route)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("request: {e}"));
    agent.runtime.block_on(async {
        let response = agent
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("body: {e}"));
        (status, bytes.to_vec())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let route = if which & 1 == 0 {
        "/v1/recommend"
    } else {
        "/askllm"
    };
    let (status, answer) = post(route, body);
    assert!(
        status.is_success() || status.is_client_error(),
        "{route}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    if status != StatusCode::OK {
        return;
    }
    if route == "/askllm" {
        let seed: SeedResponse =
            serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("seed answer: {e}"));
        assert_seed_answer_sane(&seed.text);
        return;
    }
    let request: RecommendRequest = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("a 200 for a body that does not parse: {e}"));
    let rec: Recommendation =
        serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("answer: {e}"));
    let policy = request.policy.resolve();
    assert_replicas_within(rec.replicas, &policy);
    assert_containers_within(&rec.containers, &request.snapshot, &policy);
});
