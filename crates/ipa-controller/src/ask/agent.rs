//! Client for the IPA agent: our structured `POST /v1/recommend`, and the seed's `POST /askllm` for agents that
//! only speak that. Replies are parsed strictly (quantities through `ipa_core`'s exact parser); anything invalid
//! is an error, and the caller falls back to the built-in recommender. Nothing here is trusted further: the
//! guardrails run on whatever comes back.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipa_core::{
    Bytes, ContainerRecommendation, CpuMillis, MetricsSnapshot, RecommendRequest, Recommendation,
    Resources, SeedRequest, SeedResponse, Source,
};

use crate::Error;
use crate::http::{describe, read_capped};
use crate::metrics::Metrics;

/// Replies larger than this are refused (a recommendation is a few hundred bytes).
const MAX_REPLY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Agents that answered 404 on `/v1/recommend`: asked with the seed protocol from then on.
    seed_only: Arc<Mutex<HashSet<String>>>,
}

enum Outcome {
    Reply(Vec<u8>),
    NotFound,
}

impl AgentClient {
    pub fn new(http: reqwest::Client, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            http,
            timeout,
            metrics,
            seed_only: Arc::default(),
        }
    }

    /// Asks the agent at `base` for a recommendation.
    pub async fn recommend(
        &self,
        base: &str,
        token: Option<&str>,
        request: &RecommendRequest,
    ) -> Result<Recommendation, Error> {
        let started = Instant::now();
        let result = self.recommend_inner(base, token, request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::AgentReply(_)) => "invalid_reply",
            Err(_) => "unreachable",
        };
        self.metrics.agent_request(outcome, started.elapsed());
        result
    }

    async fn recommend_inner(
        &self,
        base: &str,
        token: Option<&str>,
        request: &RecommendRequest,
    ) -> Result<Recommendation, Error> {
        let base = base.trim_end_matches('/');
        let seed_only = self
            .seed_only
            .lock()
            .map(|set| set.contains(base))
            .unwrap_or(false);
        if !seed_only {
            match self
                .post(&format!("{base}/v1/recommend"), token, request)
                .await?
            {
                Outcome::Reply(body) => return parse_recommendation(&body),
                Outcome::NotFound => {
                    if let Ok(mut set) = self.seed_only.lock() {
                        set.insert(base.to_string());
                    }
                    tracing::info!(
                        agent = base,
                        "agent has no /v1/recommend; using the seed protocol"
                    );
                }
            }
        }
        let seed = SeedRequest {
            metrics: seed_metrics_text(&request.snapshot),
        };
        match self.post(&format!("{base}/askllm"), token, &seed).await? {
            Outcome::Reply(body) => {
                let reply: SeedResponse = serde_json::from_slice(&body)
                    .map_err(|e| Error::AgentReply(format!("seed reply: {e}")))?;
                from_seed(&reply, &request.snapshot)
            }
            Outcome::NotFound => Err(Error::Agent(format!("{base}/askllm: http 404"))),
        }
    }

    async fn post<T: serde::Serialize>(
        &self,
        url: &str,
        token: Option<&str>,
        body: &T,
    ) -> Result<Outcome, Error> {
        let mut request = self.http.post(url).json(body).timeout(self.timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Agent(format!("{url}: {}", describe(e))))?;
        let status = response.status();
        if status.as_u16() == 404 || status.as_u16() == 405 {
            return Ok(Outcome::NotFound);
        }
        if !status.is_success() {
            return Err(Error::Agent(format!("{url}: http {status}")));
        }
        // Capped while reading, with or without a Content-Length.
        let body = read_capped(response, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::TooLarge => Error::AgentReply("reply too large".into()),
                other => Error::Agent(format!("{url}: {}", other.describe(MAX_REPLY_BYTES))),
            })?;
        Ok(Outcome::Reply(body))
    }
}

/// Parses our protocol's reply. The agent may only claim `llm` or `builtin`; notes from the network are
/// dropped (only our own guardrails write notes).
pub fn parse_recommendation(body: &[u8]) -> Result<Recommendation, Error> {
    let mut rec: Recommendation =
        serde_json::from_slice(body).map_err(|e| Error::AgentReply(e.to_string()))?;
    if rec.source == Source::Fallback {
        rec.source = Source::Builtin;
    }
    rec.notes.clear();
    rec.rationale = truncate(&rec.rationale, 1024);
    Ok(rec)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!("{}…", crate::conditions::cut(text, max))
}

/// Converts the seed's one-size reply into per-container resources for every container in the snapshot.
pub fn from_seed(
    reply: &SeedResponse,
    snapshot: &MetricsSnapshot,
) -> Result<Recommendation, Error> {
    let parse_cpu = |field: &str, v: &str| {
        v.parse::<CpuMillis>()
            .map_err(|e| Error::AgentReply(format!("{field}: {e}")))
    };
    let parse_mem = |field: &str, v: &str| {
        v.parse::<Bytes>()
            .map_err(|e| Error::AgentReply(format!("{field}: {e}")))
    };
    let t = &reply.text;
    let requests = Resources {
        cpu: Some(parse_cpu("cpu_request", &t.cpu_request)?),
        memory: Some(parse_mem("memory_request", &t.memory_request)?),
    };
    let limits = Resources {
        cpu: Some(parse_cpu("cpu_limit", &t.cpu_limit)?),
        memory: Some(parse_mem("memory_limit", &t.memory_limit)?),
    };
    let mut rec = Recommendation::new(t.replicas, Source::Llm);
    rec.rationale = truncate(&reply.message, 1024);
    rec.containers = snapshot
        .containers
        .iter()
        .map(|c| ContainerRecommendation {
            name: c.name.clone(),
            requests,
            limits,
        })
        .collect();
    Ok(rec)
}

/// The metrics text for a seed agent: the same facts as the structured snapshot, as compact lines rather than
/// the seed's raw Prometheus JSON.
pub fn seed_metrics_text(s: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let stats = |out: &mut String, name: &str, v: &Option<ipa_core::SeriesStats>| {
        let _ = match v {
            Some(v) => writeln!(
                out,
                "{name}: current={:.4} mean={:.4} p95={:.4} max={:.4} trend_per_min={:.4}",
                v.current, v.mean, v.p95, v.max, v.trend_per_min
            ),
            None => writeln!(out, "{name}: missing"),
        };
    };
    let _ = writeln!(
        out,
        "deployment {} replicas={} ready={} window={}s",
        s.target,
        s.replicas,
        s.ready_replicas.map_or("unknown".into(), |r| r.to_string()),
        s.window_seconds
    );
    stats(&mut out, "cpu_cores_per_pod", &s.cpu_per_pod);
    stats(&mut out, "memory_bytes_per_pod", &s.memory_per_pod);
    stats(&mut out, "ingress_requests_per_second", &s.request_rate);
    for c in &s.containers {
        let q = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
        let _ = writeln!(
            out,
            "container {}: cpu_request={} cpu_limit={} memory_request={} memory_limit={}",
            c.name,
            q(c.requests.cpu.map(|v| v.to_string())),
            q(c.limits.cpu.map(|v| v.to_string())),
            q(c.requests.memory.map(|v| v.to_string())),
            q(c.limits.memory.map(|v| v.to_string())),
        );
    }
    if let Some(free) = s.cluster.free_memory_bytes {
        let _ = writeln!(out, "node_available_memory={free}");
    }
    let _ = writeln!(out, "restarts={} oom_kills={}", s.restarts, s.oom_kills);
    for e in &s.events {
        let _ = writeln!(
            out,
            "event {} {} x{}: {}",
            e.kind, e.reason, e.count, e.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::{ContainerSnapshot, SeedRecommendation, TargetRef};

    fn snapshot() -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ipaapp".into(),
                deployment: "testapp".into(),
            },
            0,
            1,
        );
        s.containers.push(ContainerSnapshot {
            name: "cpuload".into(),
            requests: Resources::default(),
            limits: Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        });
        s
    }

    fn seed_reply(cpu_limit: &str, memory_request: &str) -> SeedResponse {
        SeedResponse {
            status: "success".into(),
            message: "scale".into(),
            text: SeedRecommendation {
                replicas: 3,
                cpu_request: "100m".into(),
                cpu_limit: cpu_limit.into(),
                memory_request: memory_request.into(),
                memory_limit: "512Mi".into(),
            },
        }
    }

    #[test]
    fn seed_reply_applies_to_every_container() -> Result<(), Error> {
        let rec = from_seed(&seed_reply("500m", "128Mi"), &snapshot())?;
        assert_eq!(rec.replicas, 3);
        assert_eq!(rec.source, Source::Llm);
        assert_eq!(rec.containers.len(), 1);
        assert_eq!(rec.containers[0].limits.cpu, Some(CpuMillis(500)));
        Ok(())
    }

    #[test]
    fn garbage_quantities_are_rejected() {
        assert!(matches!(
            from_seed(&seed_reply("lots", "128Mi"), &snapshot()),
            Err(Error::AgentReply(_))
        ));
        assert!(matches!(
            from_seed(&seed_reply("1", "-1Gi"), &snapshot()),
            Err(Error::AgentReply(_))
        ));
    }

    #[test]
    fn structured_reply_is_parsed_strictly() -> Result<(), Error> {
        let ok = br#"{"replicas": 4, "source": "fallback", "rationale": "x",
            "notes": [{"rule": "min_replicas", "message": "forged"}],
            "containers": [{"name": "c", "requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}]}"#;
        let rec = parse_recommendation(ok)?;
        assert_eq!(rec.replicas, 4);
        assert_eq!(rec.source, Source::Builtin);
        assert!(rec.notes.is_empty());
        for bad in [
            &br#"{"replicas": -1, "source": "llm"}"#[..],
            br#"{"replicas": 1e12, "source": "llm"}"#,
            br#"{"replicas": 2, "source": "llm", "containers": [{"name": "c", "requests": {"cpu": "lots"}, "limits": {}}]}"#,
            br#"{"replicas": 2, "source": "llm", "containers": [{"name": "c", "requests": {"memory": "-5Gi"}, "limits": {}}]}"#,
            b"not json",
        ] {
            assert!(matches!(parse_recommendation(bad), Err(Error::AgentReply(_))));
        }
        Ok(())
    }

    #[test]
    fn seed_text_says_what_is_missing() {
        let text = seed_metrics_text(&snapshot());
        assert!(text.contains("deployment ipaapp/testapp replicas=1"));
        assert!(text.contains("cpu_cores_per_pod: missing"));
        assert!(text.contains("container cpuload: cpu_request=unset"));
    }
}
