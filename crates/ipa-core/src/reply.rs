//! Strict parser for LLM replies: raw or fenced JSON in, a `Recommendation` within policy out, or an error that
//! says what was wrong (the agent sends that back to the model on its one retry).
//!
//! Accepted shapes:
//! - ours: `{"replicas": 3, "containers": [{"name": "app", "cpu_request": "250m", "cpu_limit": "500m",
//!   "memory_request": "256Mi", "memory_limit": "512Mi"}], "rationale": "..."}` — a container may also carry
//!   `"requests": {"cpu": .., "memory": ..}, "limits": {..}` instead of the flat fields;
//! - the seed's flat shape: `{"replicas": 3, "cpu_request": .., "cpu_limit": .., "memory_request": ..,
//!   "memory_limit": ..}`, applied to every managed container.
//!
//! The JSON may be the whole reply, inside a Markdown code fence, or embedded in prose (the first top-level
//! balanced object that parses is taken; an object nested in another is never taken on its own, and the scan is
//! one linear pass). Values a model can plausibly get slightly wrong are clamped into the policy and
//! each clamp is recorded as a `Rule::ReplyClamped` note; values that show the model misunderstood (negative,
//! not a number, not a quantity, absurdly large, fields missing) are rejected.

use serde_json::{Map, Value};

use crate::policy::{HARD_MAX_REPLICAS, ResolvedPolicy};
use crate::prompt::{MAX_RATIONALE_CHARS, sanitize_text};
use crate::quantity::{Bytes, CpuMillis, MIB, QuantityError};
use crate::recommendation::{ContainerRecommendation, GuardrailNote, Recommendation, Rule, Source};
use crate::snapshot::{MetricsSnapshot, Resources};

/// Replies longer than this are not searched for JSON (a runaway generation, not an answer).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Beyond this a CPU value is a unit mistake, not advice: 1024 cores per container.
pub const ABSURD_CPU: CpuMillis = CpuMillis(1024 * 1000);
/// Beyond this a memory value is a unit mistake, not advice: 16 TiB per container.
pub const ABSURD_MEMORY: Bytes = Bytes(16 * 1024 * 1024 * MIB);
/// Candidate objects tried when the JSON is embedded in prose.
const MAX_EMBEDDED_CANDIDATES: usize = 16;

/// Why a reply was rejected. The `Display` text is written for the model: the agent sends it back on retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply was empty")]
    Empty,
    #[error("the reply is longer than {MAX_REPLY_BYTES} bytes")]
    TooLong,
    #[error("the reply contains no JSON object")]
    NoJson,
    #[error("the reply is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the reply must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("field \"{0}\" is missing")]
    MissingField(String),
    #[error("field \"{field}\" must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field \"{field}\" = {value}: {reason}")]
    InvalidValue {
        field: String,
        value: String,
        reason: String,
    },
    #[error("container \"{0}\" appears more than once")]
    DuplicateContainer(String),
}

impl ReplyError {
    /// What the agent tells the model on its retry.
    pub fn retry_hint(&self) -> String {
        format!(
            "Your previous reply was rejected: {self}. Reply again with one JSON object only, exactly in the \
             requested shape, with quantities like \"250m\" and \"256Mi\"."
        )
    }
}

/// Parses `reply` into a recommendation for `snapshot` within `policy`. The result has `source: Llm`; model name,
/// tokens and latency are for the caller to fill in.
pub fn parse_reply(
    reply: &str,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
) -> Result<Recommendation, ReplyError> {
    let object = extract_object(reply)?;
    interpret(&object, snapshot, policy)
}

/// Finds the JSON object in a reply: the whole text, a fenced block, or the first top-level balanced object that
/// parses.
pub fn extract_object(reply: &str) -> Result<Map<String, Value>, ReplyError> {
    if reply.len() > MAX_REPLY_BYTES {
        return Err(ReplyError::TooLong);
    }
    let trimmed = reply.trim().trim_start_matches('\u{feff}');
    if trimmed.is_empty() {
        return Err(ReplyError::Empty);
    }
    let whole = serde_json::from_str::<Value>(trimmed);
    if let Ok(value) = &whole {
        return as_object(value.clone());
    }
    if let Some(fenced) = fenced_block(trimmed)
        && let Ok(value) = serde_json::from_str::<Value>(fenced.trim())
    {
        return as_object(value);
    }
    let mut first_error = None;
    for candidate in top_level_objects(trimmed).take(MAX_EMBEDDED_CANDIDATES) {
        match serde_json::from_str::<Value>(candidate) {
            Ok(value) => return as_object(value),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    match (first_error, whole) {
        (Some(e), _) => Err(ReplyError::InvalidJson(e)),
        (None, Err(e)) if trimmed.starts_with('{') => Err(ReplyError::InvalidJson(e.to_string())),
        _ => Err(ReplyError::NoJson),
    }
}

fn as_object(value: Value) -> Result<Map<String, Value>, ReplyError> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Array(_) => Err(ReplyError::NotAnObject("an array")),
        Value::String(_) => Err(ReplyError::NotAnObject("a string")),
        Value::Number(_) => Err(ReplyError::NotAnObject("a number")),
        Value::Bool(_) => Err(ReplyError::NotAnObject("a boolean")),
        Value::Null => Err(ReplyError::NotAnObject("null")),
    }
}

/// The content of the first Markdown code fence (```json or plain ```), if the fence is closed.
fn fenced_block(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    let body_start = after.find('\n').map_or(0, |i| i + 1);
    let info = &after[..body_start];
    // An info string is a word like `json`; anything else means the fence had no newline.
    let body_start = if info.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
        body_start
    } else {
        0
    };
    let body = &after[body_start..];
    let end = body.find("```")?;
    Some(&body[..end])
}

/// Top-level balanced `{...}` substrings, in order, found in one linear pass over the text. A `{` opens a
/// candidate only at depth 0, so an object nested in another — `{"replicas": 2, "previous": {"replicas": 9},}`,
/// whose outer JSON is invalid — is never taken on its own, and no position is scanned twice (the old restart
/// at every `{` was quadratic: 64 KiB of `{` took seconds). Strings and escapes are tracked inside objects only
/// (quotes in prose are prose); a `}` at depth 0 is prose too.
fn top_level_objects(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let (mut i, mut depth, mut start) = (0usize, 0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    std::iter::from_fn(move || {
        while let Some(&b) = bytes.get(i) {
            i += 1;
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if depth > 0 => in_string = true,
                b'{' => {
                    if depth == 0 {
                        start = i - 1;
                    }
                    depth += 1;
                }
                b'}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        return text.get(start..i);
                    }
                }
                _ => {}
            }
        }
        None
    })
}

/// Interprets a parsed object (either shape) under the policy.
pub fn interpret(
    object: &Map<String, Value>,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
) -> Result<Recommendation, ReplyError> {
    let mut notes = Vec::new();
    let replicas = parse_replicas(object.get("replicas"), policy, &mut notes)?;
    let flat_keys = ["cpu_request", "cpu_limit", "memory_request", "memory_limit"];
    let is_flat =
        !object.contains_key("containers") && flat_keys.iter().any(|k| object.contains_key(*k));
    let proposed: Vec<(String, Proposal)> = if is_flat {
        let flat = parse_flat(object, "")?;
        snapshot
            .containers
            .iter()
            .filter(|c| policy.manages(&c.name))
            .map(|c| (c.name.clone(), flat))
            .collect()
    } else {
        parse_containers(object.get("containers"))?
    };
    let mut containers = Vec::new();
    for (name, proposal) in proposed {
        if !snapshot.containers.iter().any(|c| c.name == name) {
            notes.push(GuardrailNote::new(
                Rule::UnknownContainer,
                format!(
                    "reply names container {:?}, which the target does not have; ignored",
                    sanitize_text(&name, 63)
                ),
            ));
            continue;
        }
        if !policy.manages(&name) {
            notes.push(GuardrailNote::new(
                Rule::UnknownContainer,
                format!("container {name:?} is not managed by the policy; ignored"),
            ));
            continue;
        }
        containers.push(clamp_container(name, proposal, policy, &mut notes));
    }
    if !policy.vertical && !containers.is_empty() {
        notes.push(GuardrailNote::new(
            Rule::VerticalDisabled,
            "vertical scaling is off in the policy; resource changes ignored",
        ));
        containers.clear();
    }
    let rationale = match object.get("rationale").or_else(|| object.get("reason")) {
        Some(Value::String(s)) => sanitize_text(s, MAX_RATIONALE_CHARS),
        _ => String::new(),
    };
    let mut rec = Recommendation::new(replicas, Source::Llm);
    rec.containers = containers;
    rec.rationale = rationale;
    rec.notes = notes;
    Ok(rec)
}

fn parse_replicas(
    value: Option<&Value>,
    policy: &ResolvedPolicy,
    notes: &mut Vec<GuardrailNote>,
) -> Result<u32, ReplyError> {
    let field = "replicas";
    let value = value.ok_or_else(|| ReplyError::MissingField(field.into()))?;
    let number = match value {
        Value::Number(n) => n,
        _ => {
            return Err(ReplyError::WrongType {
                field: field.into(),
                expected: "an integer",
            });
        }
    };
    let invalid = |reason: &str| ReplyError::InvalidValue {
        field: field.into(),
        value: number.to_string(),
        reason: reason.into(),
    };
    let whole = if let Some(u) = number.as_u64() {
        u
    } else if number.as_i64().is_some() {
        return Err(invalid("must not be negative"));
    } else {
        let f = number.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(invalid("must be a whole number"));
        }
        if f < 0.0 {
            return Err(invalid("must not be negative"));
        }
        if f > HARD_MAX_REPLICAS as f64 {
            return Err(invalid(&format!("must be at most {}", policy.max_replicas)));
        }
        f as u64
    };
    if whole > u64::from(HARD_MAX_REPLICAS) {
        return Err(invalid(&format!("must be at most {}", policy.max_replicas)));
    }
    let replicas = whole as u32;
    let clamped = replicas.clamp(policy.min_replicas, policy.max_replicas);
    if clamped != replicas {
        notes.push(GuardrailNote::new(
            Rule::ReplyClamped,
            format!(
                "replicas {replicas} outside the policy's {}..{}; clamped to {clamped}",
                policy.min_replicas, policy.max_replicas
            ),
        ));
    }
    Ok(clamped)
}

#[derive(Debug, Clone, Copy)]
struct Proposal {
    cpu_request: CpuMillis,
    cpu_limit: CpuMillis,
    memory_request: Bytes,
    memory_limit: Bytes,
}

fn parse_containers(value: Option<&Value>) -> Result<Vec<(String, Proposal)>, ReplyError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ReplyError::WrongType {
                field: "containers".into(),
                expected: "an array",
            });
        }
    };
    let mut out: Vec<(String, Proposal)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("containers[{i}].");
        let object = item.as_object().ok_or_else(|| ReplyError::WrongType {
            field: format!("containers[{i}]"),
            expected: "an object",
        })?;
        let name = match object.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(_) => {
                return Err(ReplyError::WrongType {
                    field: format!("{prefix}name"),
                    expected: "a non-empty string",
                });
            }
            None => return Err(ReplyError::MissingField(format!("{prefix}name"))),
        };
        let proposal = if object.contains_key("requests") || object.contains_key("limits") {
            parse_nested(object, &prefix)?
        } else {
            parse_flat(object, &prefix)?
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ReplyError::DuplicateContainer(sanitize_text(&name, 63)));
        }
        out.push((name, proposal));
    }
    Ok(out)
}

fn parse_flat(object: &Map<String, Value>, prefix: &str) -> Result<Proposal, ReplyError> {
    let get = |key: &str| (object.get(key), format!("{prefix}{key}"));
    let (v, f) = get("cpu_request");
    let cpu_request = cpu_field(v, &f)?;
    let (v, f) = get("cpu_limit");
    let cpu_limit = cpu_field(v, &f)?;
    let (v, f) = get("memory_request");
    let memory_request = memory_field(v, &f)?;
    let (v, f) = get("memory_limit");
    let memory_limit = memory_field(v, &f)?;
    Ok(Proposal {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    })
}

fn parse_nested(object: &Map<String, Value>, prefix: &str) -> Result<Proposal, ReplyError> {
    let section = |key: &str| -> Result<&Map<String, Value>, ReplyError> {
        match object.get(key) {
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(ReplyError::WrongType {
                field: format!("{prefix}{key}"),
                expected: "an object",
            }),
            None => Err(ReplyError::MissingField(format!("{prefix}{key}"))),
        }
    };
    let requests = section("requests")?;
    let limits = section("limits")?;
    Ok(Proposal {
        cpu_request: cpu_field(requests.get("cpu"), &format!("{prefix}requests.cpu"))?,
        cpu_limit: cpu_field(limits.get("cpu"), &format!("{prefix}limits.cpu"))?,
        memory_request: memory_field(requests.get("memory"), &format!("{prefix}requests.memory"))?,
        memory_limit: memory_field(limits.get("memory"), &format!("{prefix}limits.memory"))?,
    })
}

fn quantity_text(value: Option<&Value>, field: &str) -> Result<String, ReplyError> {
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        // Kubernetes accepts plain numbers too.
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(ReplyError::WrongType {
            field: field.into(),
            expected: "a quantity string like \"250m\" or \"256Mi\"",
        }),
        None => Err(ReplyError::MissingField(field.into())),
    }
}

fn quantity_error(field: &str, text: &str, err: QuantityError) -> ReplyError {
    ReplyError::InvalidValue {
        field: field.into(),
        value: format!("{:?}", sanitize_text(text, 40)),
        reason: err.to_string(),
    }
}

fn cpu_field(value: Option<&Value>, field: &str) -> Result<CpuMillis, ReplyError> {
    let text = quantity_text(value, field)?;
    let cpu: CpuMillis = text.parse().map_err(|e| quantity_error(field, &text, e))?;
    if cpu > ABSURD_CPU {
        return Err(ReplyError::InvalidValue {
            field: field.into(),
            value: format!("{:?}", sanitize_text(&text, 40)),
            reason: "is far beyond any container (use millicores, e.g. \"250m\")".into(),
        });
    }
    Ok(cpu)
}

fn memory_field(value: Option<&Value>, field: &str) -> Result<Bytes, ReplyError> {
    let text = quantity_text(value, field)?;
    let memory: Bytes = text.parse().map_err(|e| quantity_error(field, &text, e))?;
    if memory > ABSURD_MEMORY {
        return Err(ReplyError::InvalidValue {
            field: field.into(),
            value: format!("{:?}", sanitize_text(&text, 40)),
            reason: "is far beyond any container (use mebibytes, e.g. \"256Mi\")".into(),
        });
    }
    Ok(memory)
}

fn clamp_container(
    name: String,
    p: Proposal,
    policy: &ResolvedPolicy,
    notes: &mut Vec<GuardrailNote>,
) -> ContainerRecommendation {
    let mut note = |what: &str, from: String, to: String, why: &str| {
        notes.push(GuardrailNote::new(
            Rule::ReplyClamped,
            format!("{name}: {what} {from} {why}; clamped to {to}"),
        ));
    };
    let clamp_cpu = |v: CpuMillis| v.clamp(policy.min_cpu, policy.max_cpu);
    let clamp_mem = |v: Bytes| v.clamp(policy.min_memory, policy.max_memory);
    let millis = |v: CpuMillis| format!("{}m", v.0);
    let bounds_cpu = format!(
        "outside the policy's {}..{}",
        millis(policy.min_cpu),
        millis(policy.max_cpu)
    );
    let bounds_mem = format!(
        "outside the policy's {}..{}",
        policy.min_memory, policy.max_memory
    );
    let cpu_request = clamp_cpu(p.cpu_request);
    if cpu_request != p.cpu_request {
        note(
            "cpu request",
            millis(p.cpu_request),
            millis(cpu_request),
            &bounds_cpu,
        );
    }
    let mut cpu_limit = clamp_cpu(p.cpu_limit);
    if cpu_limit != p.cpu_limit {
        note(
            "cpu limit",
            millis(p.cpu_limit),
            millis(cpu_limit),
            &bounds_cpu,
        );
    }
    if cpu_limit < cpu_request {
        note(
            "cpu limit",
            millis(cpu_limit),
            millis(cpu_request),
            "is below the request",
        );
        cpu_limit = cpu_request;
    }
    let memory_request = clamp_mem(p.memory_request);
    if memory_request != p.memory_request {
        note(
            "memory request",
            p.memory_request.to_string(),
            memory_request.to_string(),
            &bounds_mem,
        );
    }
    let mut memory_limit = clamp_mem(p.memory_limit);
    if memory_limit != p.memory_limit {
        note(
            "memory limit",
            p.memory_limit.to_string(),
            memory_limit.to_string(),
            &bounds_mem,
        );
    }
    if memory_limit < memory_request {
        note(
            "memory limit",
            memory_limit.to_string(),
            memory_request.to_string(),
            "is below the request",
        );
        memory_limit = memory_request;
    }
    ContainerRecommendation {
        name,
        requests: Resources {
            cpu: Some(cpu_request),
            memory: Some(memory_request),
        },
        limits: Resources {
            cpu: Some(cpu_limit),
            memory: Some(memory_limit),
        },
    }
}

/// Renders a recommendation in our reply shape (what a model should have said): used for the dataset's
/// `output` of built-in decisions and by round-trip tests.
pub fn to_reply_json(rec: &Recommendation) -> Value {
    let containers: Vec<Value> = rec
        .containers
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("name".into(), c.name.clone().into());
            let mut put = |key: &str, v: Option<String>| {
                if let Some(v) = v {
                    m.insert(key.into(), v.into());
                }
            };
            put("cpu_request", c.requests.cpu.map(|v| format!("{}m", v.0)));
            put("cpu_limit", c.limits.cpu.map(|v| format!("{}m", v.0)));
            put("memory_request", c.requests.memory.map(|v| v.to_string()));
            put("memory_limit", c.limits.memory.map(|v| v.to_string()));
            Value::Object(m)
        })
        .collect();
    serde_json::json!({
        "replicas": rec.replicas,
        "containers": containers,
        "rationale": rec.rationale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::snapshot::{ContainerSnapshot, TargetRef};
    use proptest::prelude::*;

    fn snapshot() -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ns".into(),
                deployment: "web".into(),
            },
            0,
            3,
        );
        for name in ["app", "sidecar"] {
            s.containers.push(ContainerSnapshot {
                name: name.into(),
                requests: Resources::default(),
                limits: Resources::default(),
                cpu_cores: None,
                memory_bytes: None,
            });
        }
        s
    }

    fn policy() -> ResolvedPolicy {
        Policy {
            min_replicas: Some(1),
            max_replicas: Some(10),
            ..Policy::default()
        }
        .resolve()
    }

    const OURS: &str = r#"{"replicas":4,"containers":[{"name":"app","cpu_request":"250m","cpu_limit":"500m","memory_request":"256Mi","memory_limit":"512Mi"}],"rationale":"CPU at 90% of request"}"#;

    #[test]
    fn parses_our_shape() -> Result<(), ReplyError> {
        let rec = parse_reply(OURS, &snapshot(), &policy())?;
        assert_eq!(rec.replicas, 4);
        assert_eq!(rec.source, Source::Llm);
        assert_eq!(rec.containers.len(), 1);
        assert_eq!(rec.containers[0].requests.cpu, Some(CpuMillis(250)));
        assert_eq!(rec.containers[0].limits.memory, Some(Bytes(512 * MIB)));
        assert_eq!(rec.rationale, "CPU at 90% of request");
        assert!(rec.notes.is_empty());
        Ok(())
    }

    #[test]
    fn parses_fenced_and_embedded_json() -> Result<(), ReplyError> {
        let fenced = format!("Sure! Here it is:\n```json\n{OURS}\n```\nHope it helps.");
        assert_eq!(parse_reply(&fenced, &snapshot(), &policy())?.replicas, 4);
        let plain_fence = format!("```\n{OURS}```");
        assert_eq!(
            parse_reply(&plain_fence, &snapshot(), &policy())?.replicas,
            4
        );
        let prose = format!("I think {{not json}} but then {OURS} and {{\"replicas\": 9}}");
        assert_eq!(parse_reply(&prose, &snapshot(), &policy())?.replicas, 4);
        Ok(())
    }

    #[test]
    fn only_top_level_objects_are_taken() {
        // Invalid outer JSON (a trailing comma): the nested object must not stand in for it.
        for reply in [
            r#"{"replicas":2,"previous":{"replicas":9},}"#,
            r#"Here: {"replicas":2,"previous":{"replicas":9},} done"#,
            "```json\n{\"replicas\":2,\"previous\":{\"replicas\":9},}\n```",
        ] {
            let result = parse_reply(reply, &snapshot(), &policy());
            assert!(
                matches!(result, Err(ReplyError::InvalidJson(_))),
                "{reply}: {result:?}"
            );
        }
        let found: Vec<&str> =
            top_level_objects(r#"a } {"x": "}{"} b {"y": {"z": 1}} {"#).collect();
        assert_eq!(found, vec![r#"{"x": "}{"}"#, r#"{"y": {"z": 1}}"#]);
        // Quotes in prose do not start a string.
        let found: Vec<&str> = top_level_objects(r#"he said "hi {"a": 1} ok"#).collect();
        assert_eq!(found, vec![r#"{"a": 1}"#]);
    }

    #[test]
    fn brace_floods_parse_in_linear_time() {
        let started = std::time::Instant::now();
        for reply in [
            "{".repeat(MAX_REPLY_BYTES),
            "{".repeat(65_000),
            format!("{}{}", "{".repeat(32_000), "}".repeat(32_000)),
            "{}".repeat(MAX_REPLY_BYTES / 2),
            format!("x{}", "{\"a\":".repeat(MAX_REPLY_BYTES / 6)),
        ] {
            assert!(parse_reply(&reply, &snapshot(), &policy()).is_err());
        }
        // Was ~4 s for one 64 KiB flood with the quadratic scan; now milliseconds even in a debug build.
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(
            parse_reply(&"{".repeat(MAX_REPLY_BYTES + 1), &snapshot(), &policy()),
            Err(ReplyError::TooLong)
        ));
    }

    #[test]
    fn parses_the_seed_flat_shape_for_every_managed_container() -> Result<(), ReplyError> {
        let seed = r#"{"replicas": 2, "cpu_request": "200m", "cpu_limit": "500m", "memory_request": "64Mi", "memory_limit": "150Mi"}"#;
        let rec = parse_reply(seed, &snapshot(), &policy())?;
        assert_eq!(rec.containers.len(), 2);
        assert!(
            rec.containers
                .iter()
                .all(|c| c.limits.memory == Some(Bytes(150 * MIB)))
        );
        let only_app = Policy {
            containers: Some(vec!["app".into()]),
            ..Policy::default()
        }
        .resolve();
        assert_eq!(
            parse_reply(seed, &snapshot(), &only_app)?.containers.len(),
            1
        );
        Ok(())
    }

    #[test]
    fn parses_nested_requests_and_limits() -> Result<(), ReplyError> {
        let nested = r#"{"replicas":3,"containers":[{"name":"app","requests":{"cpu":"0.5","memory":"1Gi"},"limits":{"cpu":1,"memory":"2Gi"}}]}"#;
        let rec = parse_reply(nested, &snapshot(), &policy())?;
        assert_eq!(rec.containers[0].requests.cpu, Some(CpuMillis(500)));
        assert_eq!(rec.containers[0].limits.cpu, Some(CpuMillis(1000)));
        Ok(())
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("", "empty"),
            ("no json here", "no JSON"),
            ("[1,2]", "array"),
            (r#"{"replicas": -1}"#, "negative"),
            (r#"{"replicas": 1e12}"#, "at most 10"),
            (r#"{"replicas": 1000000000000}"#, "at most 10"),
            (r#"{"replicas": 2.5}"#, "whole number"),
            (r#"{"replicas": "NaN"}"#, "integer"),
            (r#"{"containers": []}"#, "\"replicas\" is missing"),
            (
                r#"{"replicas": 2, "cpu_request": "lots", "cpu_limit": "1", "memory_request": "1Mi", "memory_limit": "1Mi"}"#,
                "\"cpu_request\"",
            ),
            (
                r#"{"replicas": 2, "cpu_request": "-5m", "cpu_limit": "1", "memory_request": "1Mi", "memory_limit": "1Mi"}"#,
                "negative",
            ),
            (
                r#"{"replicas": 2, "cpu_request": "5m", "memory_request": "1Mi", "memory_limit": "1Mi"}"#,
                "\"cpu_limit\" is missing",
            ),
            (
                r#"{"replicas": 2, "cpu_request": "5000000", "cpu_limit": "1", "memory_request": "1Mi", "memory_limit": "1Mi"}"#,
                "far beyond",
            ),
            (
                r#"{"replicas": 2, "containers": [{"name": "app", "cpu_request": "1m"}]}"#,
                "containers[0].cpu_limit",
            ),
            (r#"{"replicas": 2, "containers": "app"}"#, "array"),
            (
                r#"{"replicas": 2, "containers": [{"name":"app","cpu_request":"1m","cpu_limit":"1m","memory_request":"1Mi","memory_limit":"1Mi"},{"name":"app","cpu_request":"1m","cpu_limit":"1m","memory_request":"1Mi","memory_limit":"1Mi"}]}"#,
                "more than once",
            ),
            (r#"{"replicas": 3, "containers": [{"#, "not valid JSON"),
        ];
        for (input, expected) in cases {
            let result = parse_reply(input, &snapshot(), &policy());
            let message = result.as_ref().err().map(ToString::to_string);
            assert!(
                message.as_deref().is_some_and(|m| m.contains(expected)),
                "{input:?}: {result:?} (expected an error mentioning {expected:?})"
            );
        }
    }

    #[test]
    fn clamps_and_notes_what_it_clamped() -> Result<(), ReplyError> {
        let reply = r#"{"replicas": 50, "containers": [{"name":"app","cpu_request":"900m","cpu_limit":"400m","memory_request":"1Mi","memory_limit":"512Mi"},{"name":"ghost","cpu_request":"1m","cpu_limit":"1m","memory_request":"1Mi","memory_limit":"1Mi"}], "rationale": "x"}"#;
        let rec = parse_reply(reply, &snapshot(), &policy())?;
        assert_eq!(rec.replicas, 10);
        let app = rec.container("app").ok_or(ReplyError::NoJson)?;
        assert_eq!(
            app.limits.cpu,
            Some(CpuMillis(900)),
            "limit raised to the request"
        );
        assert_eq!(
            app.requests.memory,
            Some(Bytes(16 * MIB)),
            "raised to min_memory"
        );
        assert!(rec.container("ghost").is_none());
        let rules: Vec<Rule> = rec.notes.iter().map(|n| n.rule).collect();
        assert_eq!(
            rules,
            vec![
                Rule::ReplyClamped,
                Rule::ReplyClamped,
                Rule::ReplyClamped,
                Rule::UnknownContainer
            ]
        );
        assert!(rec.notes[0].message.contains("replicas 50"));
        assert!(rec.notes[1].message.contains("below the request"));
        Ok(())
    }

    #[test]
    fn zero_replicas_is_clamped_to_the_minimum() -> Result<(), ReplyError> {
        let rec = parse_reply(r#"{"replicas": 0}"#, &snapshot(), &policy())?;
        assert_eq!(rec.replicas, 1);
        assert_eq!(rec.notes.len(), 1);
        Ok(())
    }

    #[test]
    fn vertical_off_drops_resources() -> Result<(), ReplyError> {
        let p = Policy {
            vertical: Some(false),
            ..Policy::default()
        }
        .resolve();
        let rec = parse_reply(OURS, &snapshot(), &p)?;
        assert!(rec.containers.is_empty());
        assert_eq!(rec.notes[0].rule, Rule::VerticalDisabled);
        Ok(())
    }

    #[test]
    fn retry_hint_names_the_problem() {
        let err = parse_reply(r#"{"replicas": "lots"}"#, &snapshot(), &policy())
            .err()
            .unwrap_or(ReplyError::Empty);
        assert!(err.retry_hint().contains("\"replicas\" must be an integer"));
    }

    fn within_policy(rec: &Recommendation, p: &ResolvedPolicy) -> bool {
        (p.min_replicas..=p.max_replicas).contains(&rec.replicas)
            && rec.containers.iter().all(|c| {
                let (rc, lc) = (
                    c.requests.cpu.unwrap_or_default(),
                    c.limits.cpu.unwrap_or_default(),
                );
                let (rm, lm) = (
                    c.requests.memory.unwrap_or_default(),
                    c.limits.memory.unwrap_or_default(),
                );
                rc >= p.min_cpu
                    && lc <= p.max_cpu
                    && rc <= lc
                    && rm >= p.min_memory
                    && lm <= p.max_memory
                    && rm <= lm
            })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(input in ".{0,400}") {
            if let Ok(rec) = parse_reply(&input, &snapshot(), &policy()) {
                prop_assert!(within_policy(&rec, &policy()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let input = String::from_utf8_lossy(&bytes);
            if let Ok(rec) = parse_reply(&input, &snapshot(), &policy()) {
                prop_assert!(within_policy(&rec, &policy()));
            }
        }

        #[test]
        fn json_like_replies_are_within_policy_or_rejected(
            replicas in prop_oneof![any::<i64>().prop_map(|v| v.to_string()), any::<f64>().prop_map(|v| v.to_string()), Just("\"3\"".to_string())],
            cpu in prop_oneof![Just("250m".to_string()), "[0-9]{0,12}(m|k|M|G|Mi|Gi|e3|)", ".{0,8}"],
            mem in prop_oneof![Just("256Mi".to_string()), "-?[0-9]{0,14}(Mi|Gi|Ti|Ki|m|)", ".{0,8}"],
            name in prop_oneof![Just("app".to_string()), Just("sidecar".to_string()), "[a-z]{0,5}"],
        ) {
            let reply = serde_json::json!({
                "replicas": serde_json::from_str::<Value>(&replicas).unwrap_or(Value::Null),
                "containers": [{"name": name, "cpu_request": cpu, "cpu_limit": cpu, "memory_request": mem, "memory_limit": mem}],
                "rationale": "r",
            });
            if let Ok(rec) = parse_reply(&reply.to_string(), &snapshot(), &policy()) {
                prop_assert!(within_policy(&rec, &policy()));
            }
        }

        #[test]
        fn valid_replies_round_trip(
            replicas in 1u32..=10,
            cpu_req in 10u64..=64_000, cpu_extra in 0u64..1000,
            mem_req_mib in 16u64..=262_144, mem_extra in 0u64..1024,
            rationale in "[a-zA-Z0-9 ,.%]{0,100}",
        ) {
            let cpu_lim = (cpu_req + cpu_extra).min(64_000);
            let mem_lim = (mem_req_mib + mem_extra).min(262_144);
            let mut rec = Recommendation::new(replicas, Source::Llm);
            rec.rationale = rationale.split_whitespace().collect::<Vec<_>>().join(" ");
            rec.containers = vec![ContainerRecommendation {
                name: "app".into(),
                requests: Resources { cpu: Some(CpuMillis(cpu_req)), memory: Some(Bytes(mem_req_mib * MIB)) },
                limits: Resources { cpu: Some(CpuMillis(cpu_lim)), memory: Some(Bytes(mem_lim * MIB)) },
            }];
            let text = to_reply_json(&rec).to_string();
            let parsed = parse_reply(&text, &snapshot(), &policy());
            prop_assert_eq!(parsed, Ok(rec));
        }
    }
}
