//! `ipa`: one binary, one subcommand per part of the product.

mod agent_advisor;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than the system allocator: glibc's per-thread arenas kept the controller's resident memory at
/// about twice its live heap after a 1,000-target cycle (mimalloc held even more), and musl's allocator, in the
/// static image, is slow under tokio's threads. Figures in docs/operator.md#scale.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "ipa", version, about = "Intelligent Pod Autoscaler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernetes operator.
    Controller(Box<ipa_controller::ControllerArgs>),
    /// Run the recommendation agent (HTTP).
    Agent(ipa_agent::AgentArgs),
    /// Replay a trace through one or all policies and write a report.
    Simulate(ipa_sim::cli::SimulateArgs),
    /// Score every policy on every trace.
    Bench(ipa_sim::cli::BenchArgs),
    /// Test-bed workload simulator (stands in for the application on fake nodes).
    Loadsim(ipa_loadsim::LoadsimArgs),
    /// Print the IPA CustomResourceDefinition (YAML).
    Crd {
        /// As the Helm chart's template: kept on uninstall, installed unless `crds.install=false`, and upgraded
        /// with the chart (Helm never upgrades a chart's `crds/` directory).
        #[arg(long)]
        helm: bool,
    },
    /// Print the install manifest: namespace, CRD, RBAC, controller and agent (YAML).
    Manifests(ipa_controller::manifests::ManifestOptions),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IPA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("IPA_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result: anyhow::Result<()> = match cli.command {
        Command::Simulate(args) => ipa_sim::cli::simulate(&args).map_err(Into::into),
        Command::Bench(args) => {
            ipa_sim::cli::bench_with(&args, Some(&agent_advisor::make)).map_err(Into::into)
        }
        Command::Controller(args) => {
            runtime().and_then(|rt| rt.block_on(ipa_controller::run(*args)).map_err(Into::into))
        }
        Command::Agent(args) => {
            runtime().and_then(|rt| rt.block_on(ipa_agent::run(args)).map_err(Into::into))
        }
        Command::Loadsim(args) => {
            runtime().and_then(|rt| rt.block_on(ipa_loadsim::run(args)).map_err(Into::into))
        }
        Command::Crd { helm: true } => ipa_controller::crd::crd_helm_template()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Crd { helm: false } => ipa_controller::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Manifests(options) => ipa_controller::manifests::install_yaml(&options)
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ipa: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
