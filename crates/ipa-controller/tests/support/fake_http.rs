//! Prometheus and an agent on loopback for scenario tests: real HTTP servers (axum) with scripted answers, so the
//! controller's own clients, timeouts and parsers run unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

/// A query as Prometheus's HTTP API receives it (instant: `time`; range: `start`, `end`, `step`).
#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    pub query: String,
    pub time: Option<f64>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub step: Option<f64>,
}

/// Per-query answers: the `data` of a successful reply, or `None` for an outage (HTTP 503).
pub type Answer = Arc<dyn Fn(&Query) -> Option<Value> + Send + Sync>;

async fn serve(router: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}"))
}

/// A Prometheus that answers with `answer`; its base URL.
pub async fn prometheus(answer: Answer) -> std::io::Result<String> {
    prometheus_behind_token(answer, None).await
}

/// A Prometheus behind a proxy that wants `Authorization: Bearer <token>` (401 otherwise).
pub async fn prometheus_behind_token(
    answer: Answer,
    token: Option<String>,
) -> std::io::Result<String> {
    async fn handle(
        State((answer, token)): State<(Answer, Option<String>)>,
        headers: HeaderMap,
        Form(q): Form<Query>,
    ) -> (StatusCode, String) {
        let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
        if let Some(token) = token
            && sent != Some(format!("Bearer {token}").as_str())
        {
            return (StatusCode::UNAUTHORIZED, "unauthorized".into());
        }
        match answer(&q) {
            Some(data) => (
                StatusCode::OK,
                json!({"status": "success", "data": data}).to_string(),
            ),
            None => (StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        }
    }
    let router = Router::new()
        .route("/api/v1/query", post(handle))
        .route("/api/v1/query_range", post(handle))
        .with_state((answer, token));
    serve(router).await
}

/// A workload's metrics: `pods` of Deployment pods in `namespace`, each using `cores` of CPU and `memory`
/// bytes; no restarts; room on the nodes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub namespace: String,
    pub pods: Vec<String>,
    pub cores: f64,
    pub memory: f64,
}

impl Workload {
    /// The answer to each of the controller's queries.
    pub fn answer(&self, q: &Query) -> Value {
        let text = q.query.as_str();
        let labels =
            |pod: &str| json!({"namespace": self.namespace, "pod": pod, "container": "app"});
        let matrix = |value: f64| {
            let (start, end, step) = (
                q.start.unwrap_or(0.0),
                q.end.unwrap_or(0.0),
                q.step.unwrap_or(15.0),
            );
            let times: Vec<f64> = (0..)
                .map(|i| start + f64::from(i) * step)
                .take_while(|t| *t <= end)
                .collect();
            let result: Vec<Value> = self
                .pods
                .iter()
                .map(|p| json!({"metric": labels(p), "values": times.iter().map(|t| json!([t, value.to_string()])).collect::<Vec<_>>()}))
                .collect();
            json!({"resultType": "matrix", "result": result})
        };
        let scalar = |value: f64| json!({"resultType": "vector", "result": [{"metric": {}, "value": [q.time.unwrap_or(0.0), value.to_string()]}]});
        if text.contains("container_cpu_usage_seconds_total") {
            matrix(self.cores)
        } else if text.contains("container_memory_working_set_bytes") {
            matrix(self.memory)
        } else if text.contains("node_memory_MemAvailable_bytes") {
            scalar(64.0 * 1024.0 * 1024.0 * 1024.0)
        } else if text.contains("kube_node_status_allocatable") {
            scalar(64.0)
        } else {
            json!({"resultType": "vector", "result": []})
        }
    }
}

/// What the fake agent replies, and how long it takes.
#[derive(Clone)]
pub struct AgentScript {
    pub delay: Duration,
    pub reply: Value,
    pub asked: Arc<Mutex<u32>>,
}

/// An agent speaking IPA's protocol (`POST /v1/recommend`); its base URL.
pub async fn agent(script: AgentScript) -> std::io::Result<String> {
    async fn handle(State(script): State<AgentScript>) -> (StatusCode, String) {
        if let Ok(mut n) = script.asked.lock() {
            *n += 1;
        }
        tokio::time::sleep(script.delay).await;
        (StatusCode::OK, script.reply.to_string())
    }
    serve(
        Router::new()
            .route("/v1/recommend", post(handle))
            .with_state(script),
    )
    .await
}
