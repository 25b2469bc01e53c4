//! Black-box: the agent as `ipa agent` runs it (its own listener, connection cap and idle timeout), flooded with
//! 2,000 idle connections — twice its connection cap, half of them stalled inside their headers. Every one of them
//! is closed by the server within about two idle timeouts, and the agent still answers afterwards.

use std::time::{Duration, Instant};

use clap::Parser;
use ipa_agent::AgentArgs;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: AgentArgs,
}

/// A free loopback port (bound, then released for the agent to take).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn healthz(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Open files this process may have (`Max open files`, soft limit); both ends of each connection count.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Waits until the server closes `s` (EOF or a reset), at most until `deadline`.
async fn closed_by_server(mut s: TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or the like before the close
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_are_closed_and_the_agent_still_serves() -> TestResult {
    // 2,000 connections against a cap of 1,000; where the open-files limit is lower (each connection is two files
    // here), fewer, always twice the cap.
    let count = open_files_limit()
        .map_or(2000, |limit| limit.saturating_sub(256) / 2)
        .min(2000);
    let cap = (count / 2).min(1024);
    println!("{count} connections, cap {cap}");
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::env::temp_dir().join(format!("ipa-agent-conn-{}.log", std::process::id()));
    let cli = Cli::parse_from([
        "agent",
        "--listen",
        &addr,
        "--provider",
        "builtin",
        "--idle-timeout",
        "1",
        "--max-connections",
        &cap.to_string(),
        "--log-file",
        &log.display().to_string(),
    ]);
    let agent = tokio::spawn(ipa_agent::run(cli.args));
    let started = Instant::now();
    while healthz(&addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) || agent.is_finished() {
            return Err("the agent did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Half send nothing, half stall inside their request headers.
    let mut idle = Vec::new();
    for i in 0..count {
        let mut s = TcpStream::connect(&addr).await?;
        if i % 2 == 1 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost:").await?;
        }
        idle.push(s);
    }
    // The cap serves 1,024 at once and the rest wait in the accept queue, so closing all takes about two idle
    // timeouts; a generous bound, since this machine may be busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let closes = idle
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, deadline)));
    let mut open = 0;
    for close in closes {
        if !close.await? {
            open += 1;
        }
    }
    println!("all {count} closed after {:?}", started.elapsed());
    assert_eq!(open, 0, "connections the server never closed");
    let answer = healthz(&addr).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    agent.abort();
    let _ = std::fs::remove_file(&log);
    Ok(())
}
