//! Agent benchmarks (figures are printed, nothing is asserted):
//!
//! 1. Prompt size per decision: our prompt vs the seed's prompt format built from the same Prometheus data
//!    (raw query_range JSON for the seed's 5 queries, 5-minute window at a 60 s step), counted with the model's
//!    tokenizer through llama-server's `/tokenize` (`LLM_URL` from `make llm-up`; without it, bytes only).
//! 2. Agent overhead with the built-in provider: p50/p99 latency and throughput of `POST /v1/recommend` on
//!    loopback at a fixed 500 requests/s (open loop), and the closed-loop maximum.
//!
//! `cargo bench -p ipa-agent` (set `BENCH_SECONDS` to change the 10 s load phase).

use std::time::{Duration, Instant};

use ipa_agent::seed::{SeedPod, SeedScenario, parse_metrics, render_metrics, seed_prompt};
use ipa_agent::{AppState, Config, router};
use ipa_core::quantity::MIB;
use ipa_core::{Policy, RecommendRequest, prompt};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

/// Deterministic jitter in [0, 1).
fn noise(i: usize, k: usize) -> f64 {
    let x = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add((k as u64).wrapping_mul(1_442_695_040_888_963_407))
        % 1_000_003;
    x as f64 / 1_000_003.0
}

fn scenario(pods: usize) -> SeedScenario {
    SeedScenario {
        namespace: "shop".into(),
        deployment: "checkout".into(),
        start: 1_795_000_000,
        step: 60,
        pods: (0..pods)
            .map(|k| SeedPod {
                name: format!("checkout-6d8f9b7c5-{k:05x}"),
                cpu: (0..6)
                    .map(|i| {
                        // rate() values are arbitrary floats, printed by Prometheus in full precision.
                        0.21 + 0.013 * i as f64 + 0.007 * k as f64 + 0.004 * noise(i, k)
                    })
                    .collect(),
                memory: (0..6)
                    .map(|i| (180.0 + i as f64 * 1.5 + k as f64) * MIB as f64)
                    .collect(),
            })
            .collect(),
        request_rate: (0..6).map(|i| 118.4 + 3.7 * i as f64).collect(),
        node_available: (0..6).map(|i| 6.2e9 + 1.3e7 * i as f64).collect(),
        resources: ["250m", "500m", "256Mi", "512Mi"].map(String::from),
        events: vec![
            [
                "checkout-6d8f9b7c5-00000",
                "Normal",
                "Pulled",
                "Container image \"shop/checkout:1.42\" already present on machine",
            ]
            .map(String::from),
            [
                "checkout-6d8f9b7c5-00001",
                "Warning",
                "Unhealthy",
                "Readiness probe failed: HTTP probe failed with statuscode: 503",
            ]
            .map(String::from),
        ],
    }
}

async fn count_tokens(
    client: &reqwest::Client,
    base: &str,
    text: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let answer: serde_json::Value = client
        .post(format!("{base}/tokenize"))
        .json(&serde_json::json!({"content": text}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(answer["tokens"].as_array().map_or(0, Vec::len))
}

async fn prompt_size() -> BenchResult {
    println!(
        "== prompt size per decision (same Prometheus data; seed: raw query_range JSON for 5 queries)"
    );
    let tokenizer = std::env::var("LLM_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').trim_end_matches("/v1").to_string());
    if tokenizer.is_none() {
        println!(
            "   LLM_URL is not set (make llm-up; source testbed/.env): token counts skipped, bytes only"
        );
    }
    let client = ipa_agent::provider::http_client(Duration::from_secs(60))?;
    println!(
        "   {:>4}  {:>12} {:>12}  {:>10} {:>10}  {:>7}",
        "pods", "seed bytes", "ours bytes", "seed tok", "ours tok", "ratio"
    );
    for pods in [1, 3, 10, 30] {
        let s = scenario(pods);
        let seed_text = seed_prompt(&render_metrics(&s));
        let snapshot = parse_metrics(&render_metrics(&s), s.start + 300);
        let ours = prompt::build(&snapshot, &Policy::default().resolve()).to_text();
        let (seed_tokens, our_tokens) = match &tokenizer {
            Some(base) => (
                count_tokens(&client, base, &seed_text).await?,
                count_tokens(&client, base, &ours).await?,
            ),
            None => (0, 0),
        };
        let ratio = if our_tokens > 0 {
            seed_tokens as f64 / our_tokens as f64
        } else {
            seed_text.len() as f64 / ours.len() as f64
        };
        println!(
            "   {pods:>4}  {:>12} {:>12}  {seed_tokens:>10} {our_tokens:>10}  {ratio:>6.1}x",
            seed_text.len(),
            ours.len()
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn overhead() -> BenchResult {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 120);
    let log_dir = std::env::temp_dir().join(format!("ipa-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let config = Config {
        log_file: Some(log_dir.join("llm.log")),
        ..Config::builtin()
    };
    let app = router(AppState::new(config)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/recommend", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let s = scenario(3);
    let body = serde_json::to_vec(&RecommendRequest {
        snapshot: parse_metrics(&render_metrics(&s), s.start + 300),
        policy: Policy::default(),
    })?;
    let client = ipa_agent::provider::http_client(Duration::from_secs(10))?;
    let send = |client: reqwest::Client, body: Vec<u8>, url: String| async move {
        let started = Instant::now();
        let ok = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        (started.elapsed(), ok)
    };
    // Warm-up: connections, allocator, first-touch of the ring.
    for _ in 0..200 {
        send(client.clone(), body.clone(), url.clone()).await;
    }

    println!(
        "== agent overhead, built-in provider, POST /v1/recommend on loopback ({}-byte body, llm.log on)",
        body.len()
    );
    let rate = 500u64;
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        ticker.tick().await;
        tasks.push(tokio::spawn(send(
            client.clone(),
            body.clone(),
            url.clone(),
        )));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failures = 0;
    for t in tasks {
        let (latency, ok) = t.await?;
        latencies.push(latency);
        failures += usize::from(!ok);
    }
    let wall = started.elapsed();
    latencies.sort();
    println!(
        "   open loop at {rate} req/s for {seconds} s: {} requests, {failures} failed, achieved {:.0} req/s; \
         latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // Closed loop: 8 clients back to back for the same time — the throughput ceiling on this machine.
    let deadline = Instant::now() + Duration::from_secs(seconds.min(5));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, body, url) = (client.clone(), body.clone(), url.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if send(client.clone(), body.clone(), url.clone()).await.1 {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let closed_start = Instant::now();
    let mut done = 0;
    for w in workers {
        done += w.await?;
    }
    println!(
        "   closed loop, 8 clients: {:.0} req/s",
        done as f64 / closed_start.elapsed().as_secs_f64()
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

fn main() -> BenchResult {
    // Two workers: the machine has two cores, shared by the server and the load generator.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        prompt_size().await?;
        overhead().await
    })
}
