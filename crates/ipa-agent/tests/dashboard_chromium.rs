//! The dashboard in real headless Chromium (Debian's `chromium`): a posted decision shows in the rendered DOM,
//! a decision posted while the page is open arrives over SSE without a reload, and a screenshot is saved under
//! target/test-output/. Run by `make test`; fails, not skips, without Chromium.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use ipa_agent::{AppState, Config, router};
use ipa_core::{Policy, RecommendRequest};
use tokio::sync::Notify;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CHROMIUM: &str = "/usr/bin/chromium";

fn output_dir() -> Result<PathBuf, std::io::Error> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs headless Chromium on `url` with extra flags; returns stdout. A fresh profile per run, no network
/// beyond the loopback page.
async fn chromium(url: &str, extra: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    if !std::path::Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} is missing: apt-get install chromium (scripts/install-deps.sh)"
        )
        .into());
    }
    let profile = std::env::temp_dir().join(format!(
        "ipa-chromium-{}-{}",
        std::process::id(),
        extra.len()
    ));
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend_from_slice(extra);
    args.push(url.to_string());
    let child = tokio::process::Command::new(CHROMIUM)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await??;
    let _ = std::fs::remove_dir_all(&profile);
    if !output.status.success() {
        return Err(format!(
            "chromium failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn serve() -> Result<(AppState, String), Box<dyn std::error::Error>> {
    let state = AppState::new(Config::builtin())?;
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((state, format!("http://{addr}")))
}

async fn post_decision(base: &str, deployment: &str, replicas: u32) -> TestResult {
    let mut snapshot = common::snapshot(deployment);
    snapshot.replicas = replicas;
    // Varying load, so the timelines have something to draw.
    let load = f64::from(replicas);
    snapshot.cpu_per_pod = Some(common::stats(0.06 * load, 0.08 * load));
    snapshot.containers[0].cpu_cores = snapshot.cpu_per_pod;
    snapshot.memory_per_pod = Some(common::stats(40e6 * load, 50e6 * load));
    snapshot.containers[0].memory_bytes = snapshot.memory_per_pod;
    let body = RecommendRequest {
        snapshot,
        policy: Policy::default(),
    };
    let client = ipa_agent::provider::http_client(Duration::from_secs(10))?;
    let status = client
        .post(format!("{base}/v1/recommend"))
        .json(&body)
        .send()
        .await?
        .status();
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn dashboard_renders_decisions_in_chromium() -> TestResult {
    let (_state, base) = serve().await?;
    for (i, replicas) in [2, 3, 5, 4].into_iter().enumerate() {
        post_decision(&base, "checkout", replicas).await?;
        if i == 1 {
            post_decision(&base, "search", 2).await?;
        }
    }
    let dom = chromium(&format!("{base}/"), &["--dump-dom".into()]).await?;
    assert!(
        dom.contains("shop/checkout") && dom.contains("shop/search"),
        "{dom}"
    );
    assert_eq!(dom.matches("<details").count(), 5, "{dom}");
    assert!(dom.contains("<svg"), "timelines rendered");
    assert!(dom.contains("builtin"));
    let shot = output_dir()?.join("agent-dashboard.png");
    chromium(
        &format!("{base}/"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
        ],
    )
    .await?;
    let size = std::fs::metadata(&shot)?.len();
    assert!(
        size > 10_000,
        "screenshot {} is only {size} bytes",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    Ok(())
}

/// The dashboard page exactly as `GET /` renders it, plus an image that loads only when the test says so:
/// `--dump-dom` dumps at the load event, so the page stays open (script and EventSource running) until then.
async fn serve_held_page() -> Result<(AppState, String, Arc<Notify>), Box<dyn std::error::Error>> {
    let state = AppState::new(Config::builtin())?;
    let release = Arc::new(Notify::new());
    let page_state = state.clone();
    let held = Arc::clone(&release);
    let extra = Router::new()
        .route(
            "/held",
            get(move || async move {
                let html = ipa_agent::dashboard::page(
                    &page_state.log.all(),
                    "builtin",
                    "built-in recommender",
                );
                Html(html.replace("</body>", "<img src=\"/release.gif\" alt=\"\"></body>"))
            }),
        )
        .route(
            "/release.gif",
            get(move || async move {
                held.notified().await;
                StatusCode::NO_CONTENT
            }),
        );
    let app = router(state.clone()).merge(extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((state, format!("http://{addr}"), release))
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn a_new_decision_arrives_live_over_sse() -> TestResult {
    let (state, base, release) = serve_held_page().await?;
    post_decision(&base, "before", 2).await?;
    let url = format!("{base}/held");
    let browser = tokio::spawn(async move {
        chromium(&url, &["--dump-dom".into()])
            .await
            .map_err(|e| e.to_string())
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while state.log.subscribers() == 0 {
        if tokio::time::Instant::now() > deadline {
            release.notify_one();
            return Err("the page never opened /events".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post_decision(&base, "live-arrival", 7).await?;
    // Give the page's script a moment to place the fragment, then let the page finish loading.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    release.notify_one();
    let dom = browser.await??;
    assert!(dom.contains("shop/before"), "{dom}");
    assert!(
        dom.contains("shop/live-arrival"),
        "the SSE update did not reach the page:\n{dom}"
    );
    assert_eq!(dom.matches("<details").count(), 2, "{dom}");
    assert!(dom.contains("class=\"on\""), "the live indicator is on");
    Ok(())
}
