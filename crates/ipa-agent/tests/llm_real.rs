//! The agent against a real llama.cpp llama-server serving Gemma 3 270M (started by `make llm-up`, which sets
//! LLM_URL and LLM_MODEL in testbed/.env). Run by `make test`; fails, not skips, without the server.

mod common;

use std::time::Duration;

use ipa_agent::seed::{SeedPod, SeedScenario, render_metrics};
use ipa_agent::{AppState, Config, ProviderConfig, router};
use ipa_core::quantity::{Bytes, CpuMillis, MIB};
use ipa_core::{Policy, RecommendRequest, SeedRequest};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn llm_env() -> Result<(String, String), String> {
    let need = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "{name} is not set: run `make llm-up` and `set -a; source testbed/.env; set +a`"
                )
            })
    };
    Ok((need("LLM_URL")?, need("LLM_MODEL")?))
}

/// Serves the agent on 127.0.0.1:<free port>; returns its base URL. The task ends with the test's runtime.
async fn serve(config: Config) -> Result<String, Box<dyn std::error::Error>> {
    let app = router(AppState::new(config)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

fn llm_config(url: &str, model: &str) -> Config {
    Config {
        provider: ProviderConfig::OpenAi {
            api_key: None,
            model: model.into(),
            base_url: url.into(),
        },
        // A 270M model on 2 shared cores: generous, so a busy machine does not turn into a fallback.
        timeout: Duration::from_secs(300),
        max_tokens: 400,
        ..Config::builtin()
    }
}

fn client() -> Result<reqwest::Client, ipa_agent::Error> {
    ipa_agent::provider::http_client(Duration::from_secs(900))
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn recommend_round_trip_through_llama_server() -> TestResult {
    let (url, model) = llm_env()?;
    let base = serve(llm_config(&url, &model)).await?;
    let body = RecommendRequest {
        snapshot: common::snapshot("web"),
        policy: Policy::default(),
    };
    let response = client()?
        .post(format!("{base}/v1/recommend"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let rec: serde_json::Value = response.json().await?;
    eprintln!("llama-server recommendation: {rec}");
    assert_eq!(rec["source"], "llm", "{rec}");
    assert_eq!(rec["model"], model.as_str());
    assert!(rec["prompt_tokens"].as_u64().unwrap_or(0) > 50, "{rec}");
    assert!(rec["completion_tokens"].as_u64().unwrap_or(0) > 5, "{rec}");
    // Whatever the model said, what comes back is within the policy.
    let replicas = rec["replicas"].as_u64().unwrap_or(0);
    assert!((1..=20).contains(&replicas), "{rec}");
    for c in rec["containers"].as_array().cloned().unwrap_or_default() {
        let cpu = |k: &str| {
            c[k]["cpu"]
                .as_str()
                .and_then(|v| v.parse::<CpuMillis>().ok())
        };
        let mem = |k: &str| {
            c[k]["memory"]
                .as_str()
                .and_then(|v| v.parse::<Bytes>().ok())
        };
        assert!(
            cpu("requests") <= cpu("limits") && mem("requests") <= mem("limits"),
            "{c}"
        );
        assert!(mem("requests").is_some_and(|m| m.0 >= 16 * MIB), "{c}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn a_broken_configuration_ends_in_a_clean_fallback() -> TestResult {
    let (url, model) = llm_env()?;
    // No schema and 16 tokens: the base model rambles and is cut at the limit, twice.
    let base = serve(Config {
        use_schema: false,
        max_tokens: 16,
        ..llm_config(&url, &model)
    })
    .await?;
    let body = RecommendRequest {
        snapshot: common::snapshot("web"),
        policy: Policy::default(),
    };
    let response = client()?
        .post(format!("{base}/v1/recommend"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let rec: serde_json::Value = response.json().await?;
    eprintln!("broken configuration: {rec}");
    assert_eq!(rec["source"], "fallback", "{rec}");
    assert!(
        rec["rationale"]
            .as_str()
            .unwrap_or_default()
            .starts_with("LLM not used"),
        "{rec}"
    );
    let decisions: serde_json::Value = client()?
        .get(format!("{base}/api/decisions"))
        .send()
        .await?
        .json()
        .await?;
    let attempts = decisions["decisions"][0]["attempts"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(attempts, 2, "one retry before the fallback: {decisions}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn the_seed_protocol_works_with_llama_server() -> TestResult {
    let (url, model) = llm_env()?;
    let base = serve(llm_config(&url, &model)).await?;
    let pods = (0..3)
        .map(|k| SeedPod {
            name: format!("web-5f7c9-{k}x2z"),
            cpu: (0..6).map(|i| 0.18 + 0.01 * f64::from(i)).collect(),
            memory: vec![180.0 * MIB as f64; 6],
        })
        .collect();
    let metrics = render_metrics(&SeedScenario {
        namespace: "shop".into(),
        deployment: "web".into(),
        start: 1_795_000_000,
        step: 60,
        pods,
        request_rate: vec![120.0; 6],
        node_available: vec![6.0e9; 6],
        resources: ["250m", "500m", "256Mi", "512Mi"].map(String::from),
        events: Vec::new(),
    });
    let response = client()?
        .post(format!("{base}/askllm"))
        .json(&SeedRequest { metrics })
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await?;
    eprintln!("seed answer: {answer}");
    assert_eq!(answer["status"], "success");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&model),
        "{answer}"
    );
    let text = &answer["text"];
    assert!(text["replicas"].as_u64().unwrap_or(0) >= 1);
    for key in ["cpu_request", "cpu_limit"] {
        assert!(
            text[key]
                .as_str()
                .and_then(|v| v.parse::<CpuMillis>().ok())
                .is_some(),
            "{key}: {answer}"
        );
    }
    for key in ["memory_request", "memory_limit"] {
        assert!(
            text[key]
                .as_str()
                .and_then(|v| v.parse::<Bytes>().ok())
                .is_some(),
            "{key}: {answer}"
        );
    }
    Ok(())
}
