//! Routes through the real router with `tower::ServiceExt::oneshot` (no sockets), built-in provider.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use ipa_agent::{AppState, Config, Secret, router};
use ipa_core::{Policy, RecommendRequest, SeedRequest};
use tower::ServiceExt as _;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn app(config: Config) -> Result<axum::Router, ipa_agent::Error> {
    Ok(router(AppState::new(config)?))
}

async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> Result<(StatusCode, String), Box<dyn std::error::Error>> {
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn post_json(
    uri: &str,
    body: &impl serde::Serialize,
    token: Option<&str>,
) -> Result<Request<Body>, Box<dyn std::error::Error>> {
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    Ok(builder.body(Body::from(serde_json::to_vec(body)?))?)
}

fn get(uri: &str) -> Result<Request<Body>, Box<dyn std::error::Error>> {
    Ok(Request::get(uri).body(Body::empty())?)
}

fn recommend_body(deployment: &str) -> RecommendRequest {
    RecommendRequest {
        snapshot: common::snapshot(deployment),
        policy: Policy::default(),
    }
}

#[tokio::test]
async fn recommend_returns_a_builtin_recommendation_and_logs_it() -> TestResult {
    let app = app(Config::builtin())?;
    let (status, body) = send(
        &app,
        post_json("/v1/recommend", &recommend_body("web"), None)?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rec: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(rec["source"], "builtin");
    assert!(rec["replicas"].as_u64().unwrap_or(0) >= 1);
    assert!(rec["latency_ms"].is_u64());

    let (status, body) = send(&app, get("/api/decisions")?).await?;
    assert_eq!(status, StatusCode::OK);
    let page: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(page["total"], 1);
    assert_eq!(page["decisions"][0]["target"]["deployment"], "web");
    assert_eq!(page["decisions"][0]["route"], "v1");
    assert!(
        page["decisions"][0]["prompt_user"]
            .as_str()
            .unwrap_or_default()
            .contains("shop/web replicas")
    );
    Ok(())
}

#[tokio::test]
async fn decisions_are_paged_newest_first_and_filtered_by_target() -> TestResult {
    let app = app(Config::builtin())?;
    for d in ["a", "b", "a", "c"] {
        send(&app, post_json("/v1/recommend", &recommend_body(d), None)?).await?;
    }
    let (_, body) = send(&app, get("/api/decisions?limit=2&offset=1")?).await?;
    let page: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(page["total"], 4);
    let names: Vec<&str> = page["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["target"]["deployment"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, vec!["a", "b"]);
    let (_, body) = send(&app, get("/api/decisions?target=shop/a")?).await?;
    let page: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(page["total"], 2);
    let (status, _) = send(&app, get("/api/decisions?limit=-1")?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn the_seed_protocol_answers_in_the_seed_shape() -> TestResult {
    let app = app(Config::builtin())?;
    let metrics = "Deployment Replicas-\nPromQL: kube_deployment_spec_replicas{deployment=web, namespace=shop} Metrics: {status:success,data:{resultType:matrix,result:[{metric:{deployment:web},values:[[1,2],[61,2]]}]}}\nResource requests and limits-\nCPU Resource Requests: 200m, CPU Resource Limits: 500m, Memory Resource Requests: 64Mi, Memory Resource Limits: 128Mi\nEvents of the pods-\n";
    for route in ["/askllm", "/llmagent"] {
        let (status, body) = send(
            &app,
            post_json(
                route,
                &SeedRequest {
                    metrics: metrics.into(),
                },
                None,
            )?,
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(answer["status"], "success");
        let text = &answer["text"];
        assert!(text["replicas"].as_u64().unwrap_or(0) >= 1);
        for key in ["cpu_request", "cpu_limit", "memory_request", "memory_limit"] {
            assert!(
                !text[key].as_str().unwrap_or_default().is_empty(),
                "{key} in {body}"
            );
        }
    }
    let (_, body) = send(&app, get("/api/decisions")?).await?;
    let page: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(page["decisions"][0]["route"], "seed");
    assert_eq!(page["decisions"][0]["target"]["deployment"], "web");
    Ok(())
}

#[tokio::test]
async fn posts_need_the_bearer_token_when_one_is_set() -> TestResult {
    let app = app(Config {
        token: Some(Secret::new("s3cret")),
        ..Config::builtin()
    })?;
    let body = recommend_body("web");
    let (status, text) = send(&app, post_json("/v1/recommend", &body, None)?).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!text.contains("s3cret"));
    let (status, _) = send(&app, post_json("/v1/recommend", &body, Some("s3cres"))?).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &app,
        post_json(
            "/askllm",
            &SeedRequest {
                metrics: String::new(),
            },
            Some("wrong"),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&app, post_json("/v1/recommend", &body, Some("s3cret"))?).await?;
    assert_eq!(status, StatusCode::OK);
    // Only the probes stay open.
    for probe in ["/healthz", "/readyz"] {
        let (status, _) = send(&app, get(probe)?).await?;
        assert_eq!(status, StatusCode::OK, "{probe}");
    }
    Ok(())
}

fn get_with(uri: &str, authorization: &str) -> Result<Request<Body>, Box<dyn std::error::Error>> {
    Ok(Request::get(uri)
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())?)
}

#[tokio::test]
async fn with_a_token_every_route_but_the_probes_needs_it() -> TestResult {
    let app = app(Config {
        token: Some(Secret::new("s3cret")),
        ..Config::builtin()
    })?;
    // A decision exists, so an open route would show its target.
    let (status, _) = send(
        &app,
        post_json("/v1/recommend", &recommend_body("web"), Some("s3cret"))?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    for route in ["/", "/api/decisions", "/events", "/metrics"] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-and-more"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
            Some("s3cret"),
            Some("Bearer"),
        ] {
            let request = match auth {
                Some(a) => get_with(route, a)?,
                None => get(route)?,
            };
            let (status, body) = send(&app, request).await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{route} {auth:?}");
            assert!(!body.contains("shop/web"), "{route} leaked the target");
        }
    }
    // The scheme is case-insensitive (RFC 7235); surrounding blanks are ignored.
    for auth in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "  bearer   s3cret ",
    ] {
        for route in ["/", "/api/decisions", "/metrics"] {
            let (status, body) = send(&app, get_with(route, auth)?).await?;
            assert_eq!(status, StatusCode::OK, "{route} {auth:?}: {body}");
        }
    }
    let (status, body) = send(&app, get_with("/api/decisions", "bearer s3cret")?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"web\""), "{body}");
    Ok(())
}

#[tokio::test]
async fn names_are_bounded_as_kubernetes_bounds_them() -> TestResult {
    let app = app(Config::builtin())?;
    let huge = "a".repeat(1 << 20);
    let mut with_container = recommend_body("web");
    with_container.snapshot.containers[0].name = "Main_Container".into();
    let mut namespaced = recommend_body("web");
    namespaced.snapshot.target.namespace = "shop\n=== forged".into();
    let mut managed = recommend_body("web");
    managed.policy.containers = Some(vec!["x".repeat(64)]);
    for body in [
        recommend_body(&huge),
        recommend_body(&"a".repeat(100_000)),
        recommend_body(&"a".repeat(254)),
        recommend_body("web\nnext"),
        with_container,
        namespaced,
        managed,
    ] {
        let (status, text) = send(&app, post_json("/v1/recommend", &body, None)?).await?;
        assert!(status.is_client_error(), "{status}");
        assert!(
            text.len() < 1024,
            "the refusal echoes the input: {} bytes",
            text.len()
        );
    }
    // A 253-character subdomain is a valid Deployment name.
    let long = vec!["a".repeat(63); 4]
        .join(".")
        .chars()
        .take(253)
        .collect::<String>();
    let (status, text) = send(
        &app,
        post_json("/v1/recommend", &recommend_body(&long), None)?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Nothing refused was stored.
    let (_, page) = send(&app, get("/api/decisions")?).await?;
    let page: serde_json::Value = serde_json::from_str(&page)?;
    assert_eq!(page["total"], 1);
    // The seed route: the names come from the metrics text.
    let huge = "a".repeat(300);
    let metrics = format!(
        "Deployment Replicas-\nPromQL: kube_deployment_spec_replicas{{deployment={huge}, namespace=shop}} Metrics: \
         {{status:success,data:{{resultType:matrix,result:[{{metric:{{deployment:{huge}}},values:[[1,2]]}}]}}}}\n"
    );
    let (status, _) = send(&app, post_json("/askllm", &SeedRequest { metrics }, None)?).await?;
    assert!(status.is_client_error(), "{status}");
    Ok(())
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_rejected() -> TestResult {
    let app = app(Config {
        max_body_bytes: 2048,
        ..Config::builtin()
    })?;
    let big = SeedRequest {
        metrics: "x".repeat(10_000),
    };
    let (status, _) = send(&app, post_json("/askllm", &big, None)?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let request = Request::post("/v1/recommend")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"snapshot\": 3}"))?;
    let (status, body) = send(&app, request).await?;
    assert!(status.is_client_error(), "{status}");
    assert!(body.contains("\"status\":\"error\""), "{body}");
    Ok(())
}

#[tokio::test]
async fn dashboard_metrics_and_probes() -> TestResult {
    let app = app(Config::builtin())?;
    let (_, body) = send(&app, get("/")?).await?;
    assert!(body.contains("No decisions yet"));
    // A name that is no Kubernetes name is refused before it is stored (the dashboard escapes anyway: see the
    // dashboard's unit tests).
    let (status, _) = send(
        &app,
        post_json(
            "/v1/recommend",
            &recommend_body("<img src=x onerror=alert(1)>"),
            None,
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    send(
        &app,
        post_json("/v1/recommend", &recommend_body("web"), None)?,
    )
    .await?;
    let (status, body) = send(&app, get("/")?).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<details"));
    assert!(body.contains("<svg"));
    assert!(
        !body.contains("<img src=x"),
        "the target name must be escaped"
    );
    assert!(!body.contains("https://"), "no external resources");

    let (status, body) = send(&app, get("/metrics")?).await?;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "ipa_agent_decisions_total{source=\"builtin\"} 1",
        "ipa_agent_http_requests_total{route=\"/v1/recommend\",status=\"200\"} 1",
        "ipa_agent_http_request_duration_seconds_bucket",
    ] {
        assert!(body.contains(needle), "{needle} missing in\n{body}");
    }
    assert_eq!(send(&app, get("/readyz")?).await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn events_stream_carries_new_decisions() -> TestResult {
    let state = AppState::new(Config::builtin())?;
    let app = router(state.clone());
    let response = app.clone().oneshot(get("/events")?).await?;
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = response.into_body();
    send(
        &app,
        post_json("/v1/recommend", &recommend_body("live"), None)?,
    )
    .await?;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await?;
    let data = frame
        .and_then(Result::ok)
        .and_then(|f| f.into_data().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    assert!(data.starts_with("event: decision"), "{data}");
    assert!(
        data.contains("row_html") && data.contains("shop/live"),
        "{data}"
    );
    Ok(())
}

#[tokio::test]
async fn live_subscribers_are_capped() -> TestResult {
    let app = app(Config::builtin())?;
    let mut open = Vec::new();
    for _ in 0..ipa_agent::server::MAX_SSE_SUBSCRIBERS {
        let response = app.clone().oneshot(get("/events")?).await?;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let (status, _) = send(&app, get("/events")?).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    open.pop();
    let response = app.clone().oneshot(get("/events")?).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}
