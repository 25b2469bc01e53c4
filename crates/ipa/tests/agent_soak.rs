//! Black-box: the shipped binary (`ipa agent`, built-in recommender, `llm.log` and the dataset on) takes 10,000
//! decisions through its HTTP API — both protocols, 200 targets, four keep-alive connections at once. Its peak
//! resident memory (`VmHWM` in /proc/<pid>/status) stays under 64 MiB and each log file, rotated files included,
//! under its `--log-max-bytes`. Issue 11's "after 10,000 decisions the agent's RSS stays under 64 MiB and its
//! log files under their cap".
//!
//! The binary is the one Cargo built for this test (debug), or `IPA_BIN` (`make test` passes its release build in
//! the last step, as the controller's memory figure is measured).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipa_agent::seed::{SeedPod, SeedScenario, render_metrics};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DECISIONS: usize = 10_000;
const CONNECTIONS: usize = 4;
const TARGETS: usize = 200;
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// The smallest cap the agent takes: 10,000 decisions (~1.3 KB each per file) rotate it several times over.
const LOG_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Kills the agent when the test ends, whatever happened.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn agent_binary() -> PathBuf {
    std::env::var_os("IPA_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ipa")), PathBuf::from)
}

/// The seed's metrics text for one of the targets, as its Go controller sends it.
fn seed_text(target: usize) -> String {
    render_metrics(&SeedScenario {
        namespace: format!("team-{}", target % 10),
        deployment: format!("web-{target}"),
        start: 1_795_000_000,
        step: 60,
        pods: (0..3)
            .map(|k| SeedPod {
                name: format!("web-{target}-6d8f9b7c5-{k:05x}"),
                cpu: (0..6)
                    .map(|i| 0.2 + 0.01 * (i + k + target % 7) as f64)
                    .collect(),
                memory: (0..6)
                    .map(|i| (180.0 + i as f64) * 1024.0 * 1024.0)
                    .collect(),
            })
            .collect(),
        request_rate: (0..6).map(|i| 100.0 + i as f64).collect(),
        node_available: vec![6.0e9; 6],
        resources: ["250m", "500m", "256Mi", "512Mi"].map(String::from),
        events: vec![
            [
                "web-0",
                "Warning",
                "BackOff",
                "Back-off restarting failed container",
            ]
            .map(String::from),
        ],
    })
}

/// Request bodies for every target on both protocols: the seed's, and ours with the snapshot the seed text
/// gives. Made once, so the clients spend their time waiting for the agent.
fn bodies() -> Result<Vec<(&'static str, String)>, serde_json::Error> {
    let mut bodies = Vec::with_capacity(2 * TARGETS);
    for target in 0..TARGETS {
        let text = seed_text(target);
        let snapshot = ipa_agent::seed::parse_metrics(&text, 1_795_000_360);
        let seed = serde_json::json!({ "metrics": text });
        bodies.push(("/askllm", serde_json::to_string(&seed)?));
        let ours = serde_json::json!({ "snapshot": snapshot });
        bodies.push(("/v1/recommend", serde_json::to_string(&ours)?));
    }
    Ok(bodies)
}

/// One request on a keep-alive connection; the response's status.
fn post(stream: &mut BufReader<TcpStream>, path: &str, body: &str) -> std::io::Result<u16> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // One write per request: head and body in two writes meet Nagle's algorithm and the server's delayed ACK,
    // 40 ms a request.
    let request = [head.as_bytes(), body.as_bytes()].concat();
    stream.get_mut().write_all(&request)?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer)?;
    Ok(status)
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> std::io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// CPU seconds a process has used (user + system), from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Ok(ticks.iter().sum::<f64>() / 100.0)
}

/// Bytes of `name` and of its rotated files (`name.1`, `name.2`, ...) in `dir`.
fn bytes_on_disk(dir: &Path, name: &str) -> std::io::Result<(u64, usize)> {
    let (mut bytes, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(name) {
            bytes += entry.metadata()?.len();
            files += 1;
        }
    }
    Ok((bytes, files))
}

fn start_agent(dir: &Path, addr: &str) -> Result<Agent, Box<dyn std::error::Error>> {
    let child = Command::new(agent_binary())
        .args(["agent", "--listen", addr, "--provider", "builtin"])
        .arg("--log-file")
        .arg(dir.join("llm.log"))
        .args(["--log-max-bytes", &LOG_MAX_BYTES.to_string()])
        .env("DUMP_DATASET", "1")
        .env("DUMP_DATASET_PATH", dir.join("dataset.jsonl"))
        .env("IPA_LOG", "warn")
        .env_remove("IPA_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let agent = Agent(child);
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the agent did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

#[test]
fn ten_thousand_decisions_keep_memory_and_log_files_under_their_caps() -> TestResult {
    let dir = std::env::temp_dir().join(format!("ipa-agent-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let agent = start_agent(&dir, &addr)?;
    let pid = agent.0.id();
    let bodies = std::sync::Arc::new(bodies()?);
    let (rss_at_start, _) = memory_kib(pid)?;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            let (addr, bodies) = (addr.clone(), std::sync::Arc::clone(&bodies));
            std::thread::spawn(move || -> Result<usize, String> {
                let connection = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
                connection.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut stream = BufReader::new(connection);
                let mut ok = 0;
                for i in (w..DECISIONS).step_by(CONNECTIONS) {
                    let (path, body) = &bodies[i % bodies.len()];
                    match post(&mut stream, path, body).map_err(|e| e.to_string())? {
                        200 => ok += 1,
                        other => return Err(format!("{path}: status {other}")),
                    }
                }
                Ok(ok)
            })
        })
        .collect();
    let mut answered = 0;
    for worker in workers {
        answered += worker.join().map_err(|_| "a client thread panicked")??;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid)?;
    let (rss, peak) = memory_kib(pid)?;
    let (llm_bytes, llm_files) = bytes_on_disk(&dir, "llm.log")?;
    let (dataset_bytes, dataset_files) = bytes_on_disk(&dir, "dataset.jsonl")?;
    println!(
        "{answered} decisions in {elapsed:.1?} ({} binary, {cpu:.1} CPU seconds): RSS {} KiB at start, {rss} KiB after, peak {peak} KiB; \
         llm.log {llm_bytes} bytes in {llm_files} files, dataset {dataset_bytes} bytes in {dataset_files} files \
         (cap {LOG_MAX_BYTES} each)",
        agent_binary().display(),
        rss_at_start
    );
    assert_eq!(answered, DECISIONS);
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(
        llm_bytes <= LOG_MAX_BYTES && llm_files > 1,
        "llm.log: {llm_bytes} bytes, {llm_files} files"
    );
    assert!(
        dataset_bytes <= LOG_MAX_BYTES && dataset_files > 1,
        "dataset: {dataset_bytes} bytes, {dataset_files} files"
    );
    drop(agent);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
