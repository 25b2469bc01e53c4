//! Routes, state and middleware.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use ipa_core::{
    Advice, MetricsSnapshot, Policy, RecommendRequest, Recommendation, SeedRequest, SeedResponse,
    Source,
};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio::sync::broadcast::error::RecvError;
use tower::limit::GlobalConcurrencyLimitLayer;
use tracing::Instrument as _;

use crate::decision::{DecisionLog, DecisionRecord, LiveEvent, LogFiles, Route};
use crate::engine::{Engine, Outcome};
use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::{Config, Error, Secret, dashboard, names, seed};

/// Shared state of the server.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub engine: Engine,
    pub log: DecisionLog,
    pub metrics: Metrics,
    /// Per-target guard state for the seed's protocol.
    pub guards: crate::guards::GuardStore,
    token: Option<Secret>,
    max_body_bytes: usize,
    max_concurrency: usize,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, Error> {
        let engine = Engine::new(&config)?;
        Self::with_engine(config, engine)
    }

    pub fn with_engine(config: Config, engine: Engine) -> Result<Self, Error> {
        let files = LogFiles {
            llm_log: config.log_file.as_deref(),
            dataset: config.dataset.as_deref(),
            max_bytes: config.log_max_bytes,
        };
        let log = DecisionLog::new(config.history, &files)?;
        Ok(Self(Arc::new(Inner {
            engine,
            log,
            metrics: Metrics::new(),
            guards: crate::guards::GuardStore::default(),
            token: config.token,
            max_body_bytes: config.max_body_bytes,
            max_concurrency: config.max_concurrency,
        })))
    }

    /// Decides, records and counts one decision.
    pub async fn decide(
        &self,
        route: Route,
        snapshot: &MetricsSnapshot,
        policy: &Policy,
    ) -> (Arc<DecisionRecord>, Outcome) {
        let outcome = self.engine.decide(snapshot, policy).await;
        let provider = self.engine.provider_name();
        self.metrics.observe_decision(provider, &outcome);
        let record = DecisionRecord::from_outcome(
            self.log.next_id(),
            now_ms(),
            route,
            provider,
            snapshot.target.clone(),
            snapshot.replicas,
            &outcome,
        );
        let record = self.log.record(record);
        self.publish_live(&record);
        tracing::info!(
            target = %snapshot.target,
            source = outcome.recommendation.source.as_str(),
            replicas = outcome.recommendation.replicas,
            latency_ms = outcome.recommendation.latency_ms.unwrap_or(0),
            "decision"
        );
        (record, outcome)
    }
}

impl AppState {
    /// Renders the dashboard's live update for `record` once for all `/events` subscribers; with none, nothing
    /// is rendered.
    fn publish_live(&self, record: &Arc<DecisionRecord>) {
        if self.log.subscribers() == 0 {
            return;
        }
        let update = dashboard::live_update(record, &self.log.all());
        let data = serde_json::to_string(&update).unwrap_or_default();
        self.log.publish(LiveEvent {
            id: record.id,
            data: data.into(),
        });
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// The agent's HTTP routes. With a token, every route but the probes needs it — the dashboard, decisions, events
/// and metrics show targets, prompts and raw replies.
pub fn router(state: AppState) -> Router {
    let decisions = Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/askllm", post(askllm))
        .route("/llmagent", post(askllm))
        // One semaphore for all decision routes (a per-route limit would multiply the bound).
        .layer(GlobalConcurrencyLimitLayer::new(state.max_concurrency))
        .layer(DefaultBodyLimit::max(state.max_body_bytes));
    // The token check wraps everything above, so a request without it takes no concurrency slot and no body read.
    let protected = Router::new()
        .route("/", get(dashboard_page))
        .route("/api/decisions", get(list_decisions))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .merge(decisions)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status": "error", "message": message.into()})),
    )
        .into_response()
}

/// The credentials of an `Authorization` header with the `Bearer` scheme (any case, RFC 7235), trimmed.
pub fn bearer_token(header: Option<&HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

/// Compares a presented token with the expected one in constant time, without leaking either length: both are
/// hashed to SHA-256 first and the fixed-size digests compared with `subtle`.
pub fn token_matches(given: &str, expected: &Secret) -> bool {
    let digest = |text: &str| ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let (a, b) = (digest(given), digest(expected.expose()));
    a.as_ref().ct_eq(b.as_ref()).into()
}

/// With `IPA_AGENT_TOKEN` set, every route but the probes needs `Authorization: Bearer <token>`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = bearer_token(request.headers().get(header::AUTHORIZATION)).unwrap_or("");
        if !token_matches(given, token) {
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Counts requests and their latency by matched route.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!("request", method = %request.method(), route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn recommend(
    State(state): State<AppState>,
    body: Result<Json<RecommendRequest>, JsonRejection>,
) -> Result<Json<Recommendation>, Response> {
    let Json(request) = body.map_err(|e| error_response(e.status(), e.body_text()))?;
    names::check_request(&request.snapshot, &request.policy)
        .map_err(|e| error_response(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let span = tracing::info_span!("recommend", target = %request.snapshot.target);
    let (_, outcome) = state
        .decide(Route::V1, &request.snapshot, &request.policy)
        .instrument(span)
        .await;
    Ok(Json(outcome.recommendation))
}

/// The seed's protocol: `{"metrics": "<text>"}` in, `{"status", "message", "text": {...}}` out.
async fn askllm(
    State(state): State<AppState>,
    body: Result<Json<SeedRequest>, JsonRejection>,
) -> Result<Json<SeedResponse>, Response> {
    let Json(request) = body.map_err(|e| error_response(e.status(), e.body_text()))?;
    let now = now_ms() / 1000;
    let snapshot = seed::parse_metrics(&request.metrics, now);
    names::check_request(&snapshot, &Policy::default())
        .map_err(|e| error_response(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let span = tracing::info_span!("askllm", target = %snapshot.target);
    let (_, outcome) = state
        .decide(Route::Seed, &snapshot, &Policy::default())
        .instrument(span)
        .await;
    // `rec.source` is the engine's own record of who answered (never a field of the model's reply, see
    // `engine::Engine::decide`). The seed's controller applies the answer as it is, so it gets the guarded
    // decision (issue 11 #8): the same `decide` the controller runs, with a guard state the agent keeps for the
    // target; a model's reply is held near what the metrics support.
    let rec = &outcome.recommendation;
    let fallback = outcome.fallback_reason.as_deref().unwrap_or("LLM failed");
    let advice = match rec.source {
        Source::Llm => Advice::Proposal(rec),
        Source::Builtin => Advice::Builtin,
        Source::Fallback => Advice::Failed(fallback),
    };
    let decision = state
        .guards
        .decide(&snapshot, &Policy::default().resolve(), advice, now);
    let decided = Recommendation {
        containers: decision.containers,
        ..Recommendation::new(decision.replicas, decision.source)
    };
    let message = match rec.source {
        Source::Llm => format!(
            "Response from {} ({})",
            state.engine.provider_name(),
            rec.model.as_deref().unwrap_or("-")
        ),
        Source::Builtin => "Response from the built-in recommender".to_string(),
        Source::Fallback => format!(
            "Fallback to the built-in recommender: {}",
            outcome.fallback_reason.as_deref().unwrap_or("LLM failed")
        ),
    };
    Ok(Json(SeedResponse {
        status: "success".into(),
        message,
        text: seed::to_seed_recommendation(&decided, &snapshot),
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    target: Option<String>,
}

async fn list_decisions(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "offset and limit must be non-negative integers",
        );
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let (total, items) = state.log.page(q.offset, limit, q.target.as_deref());
    Json(json!({"total": total, "offset": q.offset, "limit": limit, "decisions": items}))
        .into_response()
}

async fn dashboard_page(State(state): State<AppState>) -> Html<String> {
    let records = state.log.all();
    Html(dashboard::page(
        &records,
        state.engine.provider_name(),
        state.engine.model_name().unwrap_or("built-in recommender"),
    ))
}

/// Live `/events` listeners at most; more get 503 (each holds a connection and a copy of every event).
pub const MAX_SSE_SUBSCRIBERS: usize = 32;

async fn events(State(state): State<AppState>) -> Response {
    if state.log.subscribers() >= MAX_SSE_SUBSCRIBERS {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live dashboards; try again later",
        );
    }
    events_stream(state).into_response()
}

fn events_stream(state: AppState) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.log.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(live) => {
                    let event = Event::default()
                        .event("decision")
                        .id(live.id.to_string())
                        .data(&*live.data);
                    return Some((Ok(event), receiver));
                }
                // A slow client skips what it missed; a reload shows everything.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_decision_is_rendered_once_for_all_subscribers()
    -> Result<(), Box<dyn std::error::Error>> {
        let state = AppState::new(Config::builtin())?;
        let mut receivers: Vec<_> = (0..3).map(|_| state.log.subscribe()).collect();
        let snapshot = ipa_core::test_support::hot_web_snapshot("web");
        let (record, _) = state.decide(Route::V1, &snapshot, &Policy::default()).await;
        let events = receivers
            .iter_mut()
            .map(|r| r.try_recv())
            .collect::<Result<Vec<LiveEvent>, _>>()?;
        // One rendering, shared: every subscriber holds the same allocation.
        assert!(
            events
                .windows(2)
                .all(|w| Arc::ptr_eq(&w[0].data, &w[1].data))
        );
        assert!(events.iter().all(|e| e.id == record.id));
        assert!(events[0].data.contains("\"row_html\""));
        Ok(())
    }
}
