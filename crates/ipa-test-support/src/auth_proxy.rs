//! A reverse proxy in front of the bed's Prometheus that serves only requests carrying `Authorization: Bearer
//! <token>`, as a managed Prometheus (or an auth proxy before a shared one) does: what the controller's
//! `prometheusAuth` is tested against. It counts what it let through and what it refused, so a test can tell
//! "the controller sent the token" from "the controller never asked".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::TestResult;

/// The running proxy; stopped on drop.
#[derive(Debug)]
pub struct AuthProxy {
    /// Where to point `prometheusUri`.
    pub url: String,
    counts: Arc<Counts>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

struct Proxy {
    upstream: String,
    expected: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
}

impl AuthProxy {
    /// Listens on a free loopback port and forwards authorized requests to `upstream` (a Prometheus base URL).
    pub async fn start(upstream: &str, token: &str) -> TestResult<Self> {
        let counts = Arc::new(Counts::default());
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            expected: format!("Bearer {token}"),
            http: reqwest::Client::new(),
            counts: counts.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            counts,
            server,
        })
    }

    /// Requests forwarded to Prometheus (they carried the token).
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Requests answered 401 (no token, or another one).
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == proxy.expected.as_bytes());
    if !authorized {
        proxy.counts.refused.fetch_add(1, Ordering::SeqCst);
        let challenge = [(WWW_AUTHENTICATE, "Bearer")];
        return (StatusCode::UNAUTHORIZED, challenge, "bearer token required").into_response();
    }
    proxy.counts.accepted.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = proxy
        .http
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, content_type, bytes))
    };
    match answer.await {
        Ok((status, content_type, bytes)) => {
            let mut response = (status, bytes).into_response();
            if let Some(content_type) = content_type {
                response.headers_mut().insert(CONTENT_TYPE, content_type);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
