//! A small Prometheus HTTP API client: `/api/v1/query` and `/api/v1/query_range`, POSTed as forms.
//!
//! Plain reqwest rather than `prometheus-http-query`: we need exactly two endpoints, POST bodies (a selector for
//! 1,000 targets is far longer than a URL should be), our own timeout and per-query metrics, and the same
//! rustls setup as the agent client. Parsing Prometheus' JSON is a few serde structs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::Error;
use crate::http::{describe, read_capped};
use crate::metrics::Metrics;

/// Labels of one series.
pub type Labels = BTreeMap<String, String>;

/// One series of a range query: (unix seconds, value) pairs, oldest first. Non-finite values are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(f64, f64)>,
}

/// One sample of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorItem>),
    Matrix(Vec<MatrixItem>),
    Scalar((f64, SampleValue)),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: Labels,
    value: (f64, SampleValue),
}

#[derive(Debug, Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    values: Vec<(f64, SampleValue)>,
}

/// A sample value. Prometheus sends numbers as strings ("0.25", "NaN", "+Inf"); they are parsed while reading,
/// so a range query over 1,000 pods does not allocate a string per point. Unparsable text reads as NaN, which
/// is then dropped like any non-finite value.
#[derive(Debug, Clone, Copy)]
struct SampleValue(f64);

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SampleValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sample value as a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SampleValue, E> {
                Ok(SampleValue(text.parse().unwrap_or(f64::NAN)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn parse_value(value: SampleValue) -> Option<f64> {
    Some(value.0).filter(|v| v.is_finite())
}

/// Parses an instant-query body into samples (scalars become one unlabeled sample).
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, Error> {
    match parse_data(body)? {
        ApiData::Vector(items) => Ok(items
            .into_iter()
            .filter_map(|i| {
                parse_value(i.value.1).map(|value| Sample {
                    labels: i.metric,
                    value,
                })
            })
            .collect()),
        ApiData::Scalar((_, v)) => Ok(parse_value(v)
            .map(|value| Sample {
                labels: Labels::new(),
                value,
            })
            .into_iter()
            .collect()),
        _ => Err(Error::Prometheus("expected a vector result".into())),
    }
}

/// Parses a range-query body into series.
pub fn parse_matrix(body: &[u8]) -> Result<Vec<Series>, Error> {
    match parse_data(body)? {
        ApiData::Matrix(items) => Ok(items
            .into_iter()
            .map(|i| Series {
                labels: i.metric,
                points: i
                    .values
                    .into_iter()
                    .filter_map(|(t, v)| parse_value(v).map(|v| (t, v)))
                    .collect(),
            })
            .collect()),
        _ => Err(Error::Prometheus("expected a matrix result".into())),
    }
}

fn parse_data(body: &[u8]) -> Result<ApiData, Error> {
    let response: ApiResponse = serde_json::from_slice(body)
        .map_err(|e| Error::Prometheus(format!("unreadable response: {e}")))?;
    if response.status != "success" {
        return Err(Error::Prometheus(
            response.error.unwrap_or_else(|| "query failed".into()),
        ));
    }
    response
        .data
        .ok_or_else(|| Error::Prometheus("response has no data".into()))
}

/// How the controller proves itself to a Prometheus that wants it (managed services, a proxy in front): a
/// bearer token or basic auth, and extra headers (a tenant header such as `X-Scope-OrgID`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub bearer: Option<String>,
    /// (username, password)
    pub basic: Option<(String, String)>,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    /// Never the secrets, only which kinds are set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("basic", &self.basic.as_ref().map(|(user, _)| user))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Client for one Prometheus base URL.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    credentials: Credentials,
}

impl Prometheus {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            metrics,
            credentials: Credentials::default(),
        }
    }

    pub fn with_credentials(self, credentials: Credentials) -> Self {
        Self {
            credentials,
            ..self
        }
    }

    fn authenticated(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let c = &self.credentials;
        if let Some(token) = &c.bearer {
            request = request.bearer_auth(token);
        } else if let Some((user, password)) = &c.basic {
            request = request.basic_auth(user, Some(password));
        }
        for (name, value) in &c.headers {
            request = request.header(name, value);
        }
        request
    }

    /// Instant query at `at` (unix seconds).
    pub async fn query(&self, query: &str, at: i64) -> Result<Vec<Sample>, Error> {
        let form = [("query", query.to_string()), ("time", at.to_string())];
        let body = self.post("query", "instant", &form).await?;
        parse_vector(&body)
    }

    /// Range query over `[start, end]` with `step` seconds.
    pub async fn query_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: u64,
    ) -> Result<Vec<Series>, Error> {
        let form = [
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let body = self.post("query_range", "range", &form).await?;
        parse_matrix(&body)
    }

    async fn post(
        &self,
        endpoint: &str,
        kind: &'static str,
        form: &[(&str, String)],
    ) -> Result<Vec<u8>, Error> {
        let started = Instant::now();
        let result = self.post_inner(endpoint, form).await;
        self.metrics
            .prometheus_query(kind, result.is_ok(), started.elapsed());
        result
    }

    async fn post_inner(&self, endpoint: &str, form: &[(&str, String)]) -> Result<Vec<u8>, Error> {
        let url = format!("{}/api/v1/{endpoint}", self.base);
        let response = self
            .authenticated(self.http.post(&url))
            .form(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Error::Prometheus(format!("{url}: {}", describe(e))))?;
        let status = response.status();
        let body = read_capped(response, MAX_PROMETHEUS_BODY_BYTES)
            .await
            .map_err(|e| {
                Error::Prometheus(format!("{url}: {}", e.describe(MAX_PROMETHEUS_BODY_BYTES)))
            })?;
        // Prometheus answers 400/422 with a JSON error body worth reporting.
        if !(status.is_success() || status.as_u16() == 400 || status.as_u16() == 422) {
            return Err(Error::Prometheus(format!("{url}: http {status}")));
        }
        Ok(body)
    }
}

/// Largest Prometheus answer read: a 1,000-target range query is a few MB; the controller's memory limit is 128 MiB.
pub const MAX_PROMETHEUS_BODY_BYTES: usize = 32 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_and_drops_nan() -> Result<(), Error> {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"namespace":"a","pod":"p-1"},"value":[1700000000.1,"0.25"]},
            {"metric":{"namespace":"a","pod":"p-2"},"value":[1700000000.1,"NaN"]}]}}"#;
        let samples = parse_vector(body)?;
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].value, 0.25);
        assert_eq!(
            samples[0].labels.get("pod").map(String::as_str),
            Some("p-1")
        );
        Ok(())
    }

    #[test]
    fn parses_matrices() -> Result<(), Error> {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"ingress":"i"},"values":[[1,"1"],[2,"+Inf"],[3,"3"]]}]}}"#;
        let series = parse_matrix(body)?;
        assert_eq!(series[0].points, vec![(1.0, 1.0), (3.0, 3.0)]);
        Ok(())
    }

    #[test]
    fn reports_errors() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let err = parse_vector(body).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("prometheus query failed: parse error at char 3")
        );
        assert!(parse_vector(b"<html>").is_err());
    }

    #[test]
    fn scalar_is_one_sample() -> Result<(), Error> {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"42"]}}"#;
        assert_eq!(parse_vector(body)?[0].value, 42.0);
        Ok(())
    }
}
