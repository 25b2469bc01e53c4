//! IPA agent: an HTTP service that turns a metrics snapshot into a scaling recommendation.
//!
//! It speaks two protocols — ours (`POST /v1/recommend`) and the seed's (`POST /askllm`, `POST /llmagent`) — and
//! asks a configured LLM provider (Gemini, any OpenAI-compatible server) or the built-in recommender. Every LLM
//! reply goes through the core's strict parser; an invalid reply gets one corrective retry, then the built-in
//! recommendation is used and marked `fallback`. Decisions are kept in a bounded ring (dashboard, `/api/decisions`,
//! `/events`), appended to `llm.log`, and with `DUMP_DATASET` to a JSONL dataset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub mod conn;
pub mod dashboard;
pub mod decision;
pub mod engine;
pub mod guards;
pub mod metrics;
pub mod names;
pub mod provider;
pub mod seed;
pub mod server;

pub use engine::Engine;
pub use server::{AppState, router};

/// Which recommender answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// The core's built-in recommender: no key, no network.
    Builtin,
    /// Google Gemini `generateContent` with a response schema (`GEMINI_API_KEY`).
    Gemini,
    /// Any OpenAI-compatible chat-completions endpoint with a JSON-schema response format.
    Openai,
}

/// Arguments of `ipa agent`. Secrets come from the environment only (never flags, never logs):
/// `IPA_AGENT_TOKEN`, `GEMINI_API_KEY`, `OPENAI_API_KEY`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Recommender; default: builtin unless a base URL or an API key is configured.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// Model name; default: gemini-2.5-flash for gemini, gpt-4o-mini for openai.
    #[arg(long)]
    pub model: Option<String>,
    /// Base URL of the provider's API (openai: up to and including `/v1`).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Time limit for one LLM exchange, retries on 429/5xx included, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Recommendation requests handled at once; further ones wait.
    #[arg(long, default_value_t = 4)]
    pub max_concurrency: usize,
    /// Token limit of one LLM reply.
    #[arg(long, default_value_t = 400)]
    pub max_tokens: u32,
    /// Do not send the reply's JSON schema to the provider (only to test the fallback path).
    #[arg(long)]
    pub no_schema: bool,
    /// Append every decision's prompt and reply here, as the seed's agent did; empty to disable.
    #[arg(long, default_value = "llm.log")]
    pub log_file: PathBuf,
    /// Bytes the log file and the dataset may each take on disk, rotated files included (`llm.log.1` … `.3`);
    /// at least 2 MiB.
    #[arg(long, default_value_t = decision::DEFAULT_LOG_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Decisions kept in memory for the dashboard and `/api/decisions`.
    #[arg(long, default_value_t = 1000)]
    pub history: usize,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Listen on a non-loopback address without `IPA_AGENT_TOKEN`: anyone who reaches the port can read the
    /// dashboard (targets, prompts, replies) and ask for decisions. Only for a network you control.
    #[arg(long, env = "IPA_AGENT_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Open connections at most; more wait in the accept queue.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Close a connection that moves no byte for this long (partial headers, stalled bodies, idle keep-alive), in
    /// seconds. Default: 60, or twice `--timeout` plus 10 when that is longer (a request waiting for the LLM moves
    /// no byte either).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
}

impl AgentArgs {
    /// The idle timeout to use (see `--idle-timeout`).
    pub fn idle_timeout(&self) -> Duration {
        let default = (2.0 * self.timeout + 10.0).max(60.0);
        let secs = self
            .idle_timeout
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(default)
            .min(7200.0);
        Duration::from_secs_f64(secs)
    }
}

/// Whether the agent may listen on `addr`: without a token only on loopback, unless `insecure_no_auth`. `Ok(true)`
/// means "allowed, but warn loudly".
pub fn check_listen(
    addr: SocketAddr,
    has_token: bool,
    insecure_no_auth: bool,
) -> Result<bool, Error> {
    if has_token || addr.ip().is_loopback() {
        return Ok(false);
    }
    if insecure_no_auth {
        return Ok(true);
    }
    Err(Error::Config(format!(
        "refusing to listen on {addr} without a token: set IPA_AGENT_TOKEN (installed: the `token` key of the \
         Secret ipa-agent-token, see docs/operator.md), listen on a loopback address, or pass --insecure-no-auth"
    )))
}

/// Everything that can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("http client: {0}")]
    Client(String),
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The provider, resolved from arguments and environment.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    Builtin,
    Gemini {
        api_key: Secret,
        model: String,
        base_url: String,
    },
    OpenAi {
        api_key: Option<Secret>,
        model: String,
        base_url: String,
    },
}

pub const DEFAULT_GEMINI_MODEL: &str = "gemini-2.5-flash";
pub const DEFAULT_GEMINI_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_OPENAI_URL: &str = "https://api.openai.com/v1";

/// The agent's configuration: arguments plus environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub provider: ProviderConfig,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub max_tokens: u32,
    pub use_schema: bool,
    pub log_file: Option<PathBuf>,
    pub dataset: Option<PathBuf>,
    /// Disk cap of the log file and of the dataset, each (rotated files included).
    pub log_max_bytes: u64,
    pub history: usize,
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
}

impl Config {
    /// A built-in-only configuration with no files: for tests and benchmarks.
    pub fn builtin() -> Self {
        Self {
            provider: ProviderConfig::Builtin,
            timeout: Duration::from_secs(30),
            max_concurrency: 4,
            max_tokens: 400,
            use_schema: true,
            log_file: None,
            dataset: None,
            log_max_bytes: decision::DEFAULT_LOG_MAX_BYTES,
            history: 1000,
            token: None,
            max_body_bytes: 1024 * 1024,
        }
    }

    /// Resolves arguments against the environment (`env` looks a variable up; empty values count as unset).
    pub fn from_args(
        args: &AgentArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let gemini_key = env("GEMINI_API_KEY").map(Secret::new);
        let openai_key = env("OPENAI_API_KEY").map(Secret::new);
        let kind = args.provider.unwrap_or(if args.base_url.is_some() {
            ProviderKind::Openai
        } else if gemini_key.is_some() {
            ProviderKind::Gemini
        } else if openai_key.is_some() {
            ProviderKind::Openai
        } else {
            ProviderKind::Builtin
        });
        let provider = match kind {
            ProviderKind::Builtin => ProviderConfig::Builtin,
            ProviderKind::Gemini => ProviderConfig::Gemini {
                api_key: gemini_key.ok_or_else(|| {
                    Error::Config(
                        "--provider gemini needs GEMINI_API_KEY in the environment".into(),
                    )
                })?,
                model: args
                    .model
                    .clone()
                    .unwrap_or_else(|| DEFAULT_GEMINI_MODEL.into()),
                base_url: args
                    .base_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_GEMINI_URL.into()),
            },
            ProviderKind::Openai => ProviderConfig::OpenAi {
                api_key: openai_key,
                model: args
                    .model
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.into()),
                base_url: args
                    .base_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OPENAI_URL.into()),
            },
        };
        if !(args.timeout.is_finite() && args.timeout > 0.0) {
            return Err(Error::Config(
                "--timeout must be a positive number of seconds".into(),
            ));
        }
        let truthy = |v: &str| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        };
        let dataset = env("DUMP_DATASET").filter(|v| truthy(v)).map(|_| {
            PathBuf::from(env("DUMP_DATASET_PATH").unwrap_or_else(|| "dataset.jsonl".into()))
        });
        Ok(Self {
            provider,
            timeout: Duration::from_secs_f64(args.timeout.min(3600.0)),
            max_concurrency: args.max_concurrency.max(1),
            max_tokens: args.max_tokens.clamp(16, 8192),
            use_schema: !args.no_schema,
            log_file: Some(args.log_file.clone()).filter(|p| !p.as_os_str().is_empty()),
            dataset,
            log_max_bytes: args.log_max_bytes.max(decision::MIN_LOG_MAX_BYTES),
            history: args.history.clamp(1, 100_000),
            token: env("IPA_AGENT_TOKEN").map(Secret::new),
            max_body_bytes: args.max_body_bytes.max(1024),
        })
    }
}

/// Runs the agent until Ctrl-C / SIGTERM.
pub async fn run(args: AgentArgs) -> Result<(), Error> {
    let config = Config::from_args(&args, |name| std::env::var(name).ok())?;
    if check_listen(args.listen, config.token.is_some(), args.insecure_no_auth)? {
        tracing::warn!(
            addr = %args.listen,
            "INSECURE: --insecure-no-auth: listening on a non-loopback address WITHOUT AUTHENTICATION; anyone who \
             reaches this port can read every target, prompt and reply and ask for decisions"
        );
    }
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(%addr, provider = state.engine.provider_name(), model = state.engine.model_name(), "ipa agent listening");
    let listener = conn::LimitedListener::new(listener, args.max_connections, args.idle_timeout());
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(Error::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn args(list: &[&str]) -> AgentArgs {
        let mut argv = vec!["ipa-agent"];
        argv.extend_from_slice(list);
        Cli::parse_from(argv).args
    }

    #[test]
    fn defaults_to_builtin_without_keys() -> Result<(), Error> {
        let c = Config::from_args(&args(&[]), |_| None)?;
        assert_eq!(c.provider, ProviderConfig::Builtin);
        assert!(c.dataset.is_none());
        assert_eq!(c.log_file, Some(PathBuf::from("llm.log")));
        Ok(())
    }

    #[test]
    fn picks_gemini_with_a_key_and_keeps_it_out_of_debug() -> Result<(), Error> {
        let env = |k: &str| (k == "GEMINI_API_KEY").then(|| "sekrit-key".to_string());
        let c = Config::from_args(&args(&[]), env)?;
        assert!(
            matches!(&c.provider, ProviderConfig::Gemini { model, .. } if model == DEFAULT_GEMINI_MODEL)
        );
        assert!(!format!("{c:?}").contains("sekrit"));
        Ok(())
    }

    #[test]
    fn base_url_means_openai_compatible() -> Result<(), Error> {
        let c = Config::from_args(
            &args(&["--base-url", "http://127.0.0.1:9/v1", "--model", "gemma"]),
            |_| None,
        )?;
        assert!(
            matches!(&c.provider, ProviderConfig::OpenAi { api_key: None, model, .. } if model == "gemma")
        );
        Ok(())
    }

    #[test]
    fn no_token_means_loopback_only_unless_explicitly_insecure() -> Result<(), Error> {
        let addr = |s: &str| {
            s.parse::<SocketAddr>()
                .unwrap_or_else(|e| unreachable!("{e}"))
        };
        assert!(!check_listen(addr("127.0.0.1:8080"), false, false)?);
        assert!(!check_listen(addr("[::1]:8080"), false, false)?);
        assert!(!check_listen(addr("0.0.0.0:8000"), true, false)?);
        assert!(check_listen(addr("0.0.0.0:8000"), false, false).is_err());
        assert!(check_listen(addr("10.1.2.3:8000"), false, false).is_err());
        assert!(check_listen(addr("[::]:8000"), false, false).is_err());
        assert!(check_listen(addr("0.0.0.0:8000"), false, true)?);
        assert!(args(&["--insecure-no-auth"]).insecure_no_auth);
        Ok(())
    }

    #[test]
    fn gemini_without_key_is_an_error() {
        assert!(Config::from_args(&args(&["--provider", "gemini"]), |_| None).is_err());
    }

    #[test]
    fn dataset_follows_the_seed_env() -> Result<(), Error> {
        let env = |k: &str| match k {
            "DUMP_DATASET" => Some("1".to_string()),
            "IPA_AGENT_TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let c = Config::from_args(&args(&[]), env)?;
        assert_eq!(c.dataset, Some(PathBuf::from("dataset.jsonl")));
        assert_eq!(c.token, Some(Secret::new("t")));
        Ok(())
    }
}
