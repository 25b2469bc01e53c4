//! `ipa simulate` and `ipa bench`.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use ipa_core::Recommendation;

use crate::policy::advisors::{RandomAdvisor, ReplayAdvisor};
use crate::policy::{Advisor, Ipa, PolicyKind, SimSettings};
use crate::report::{self, ReportError};
use crate::run::{RunResult, run, run_policy};
use crate::score::Score;
use crate::targets::{Ratios, Summary, ratios, render, summary};
use crate::trace::{self, Mapping, Pattern, Provenance, TraceError, TraceOptions, Workload};

/// Output format of the score tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `--policy`: one policy or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyChoice {
    All,
    Ipa,
    Hpa,
    Vpa,
    Static,
    Oracle,
}

impl PolicyChoice {
    fn kinds(self) -> Vec<PolicyKind> {
        match self {
            PolicyChoice::All => PolicyKind::ALL.to_vec(),
            PolicyChoice::Ipa => vec![PolicyKind::Ipa],
            PolicyChoice::Hpa => vec![PolicyKind::Hpa],
            PolicyChoice::Vpa => vec![PolicyKind::Vpa],
            PolicyChoice::Static => vec![PolicyKind::Static],
            PolicyChoice::Oracle => vec![PolicyKind::Oracle],
        }
    }
}

/// How traces are turned into demand (shared by both commands).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// How trace values map to requests/s: rate (p99 → 8 reference pods), cpu (100 % → 8 reference pods),
    /// or auto (by file name).
    #[arg(long, value_enum, default_value_t = Mapping::Auto)]
    pub mapping: Mapping,
    /// Time compression: 4 plays a 5-minute trace step in 75 s.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Simulate only the first this-many hours (after compression).
    #[arg(long)]
    pub limit_hours: Option<f64>,
}

impl WorkloadArgs {
    fn options(&self) -> TraceOptions {
        TraceOptions {
            mapping: self.mapping,
            speed: self.speed,
            limit_hours: self.limit_hours,
        }
    }
}

/// Arguments of `ipa simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// A `timestamp,value` CSV trace. Without it (and without --pattern) a synthetic daily sine is used.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// A synthetic pattern instead of a trace.
    #[arg(long, value_enum, conflicts_with = "trace")]
    pub pattern: Option<Pattern>,
    /// Length of a synthetic pattern, in hours.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Which policy to run.
    #[arg(long, value_enum, default_value_t = PolicyChoice::All)]
    pub policy: PolicyChoice,
    /// Directory for the HTML report (index.html with SVG charts).
    #[arg(long, default_value = "ipa-report")]
    pub report: PathBuf,
    /// Format of the score table printed on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// Arguments of `ipa bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Trace files; default: every CSV in ../shared/traces/nab/ next to the repository (or $IPA_TRACES_DIR).
    #[arg(long, num_args = 1..)]
    pub trace: Vec<PathBuf>,
    /// Directory of traces used when no --trace is given.
    #[arg(long, env = "IPA_TRACES_DIR")]
    pub traces_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Adds rows for IPA with another advisor: `random` (uniformly random proposals, fixed seed),
    /// `replay:FILE` (recommendations from an agent's decision log or dataset, JSON lines, in order) or
    /// `agent:URL` (a live agent, asked once per simulated interval: slow, for short runs with --limit-hours).
    #[arg(long)]
    pub advisor: Option<AdvisorChoice>,
    /// Whether the simulated cluster resizes pods in place (`pods/resize`, Kubernetes ≥ 1.33); `false` turns
    /// every resize into a rolling update, as on older clusters.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub in_place_resize: bool,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// `--advisor`: which advisor the extra `ipa+…` rows use.
#[derive(Debug, Clone, PartialEq)]
pub enum AdvisorChoice {
    Random,
    Replay(PathBuf),
    Agent(String),
}

/// Makes the advisor that asks a live agent at a URL. The simulator does no IO: the `ipa` binary brings it.
pub type AgentAdvisorFactory = dyn Fn(&str) -> Result<Box<dyn Advisor>, String> + Sync;

impl std::str::FromStr for AdvisorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "random" => Ok(Self::Random),
            Some(("replay", path)) if !path.is_empty() => Ok(Self::Replay(PathBuf::from(path))),
            Some(("agent", url)) if !url.is_empty() => Ok(Self::Agent(url.to_string())),
            _ => Err(format!(
                "unknown advisor {s:?}: use random, replay:FILE or agent:URL"
            )),
        }
    }
}

impl AdvisorChoice {
    /// The advisor for one run (each run gets its own, from the start).
    fn build(
        &self,
        recorded: &[Recommendation],
        agent: Option<&AgentAdvisorFactory>,
    ) -> Option<Box<dyn Advisor>> {
        match self {
            Self::Random => Some(Box::new(RandomAdvisor::new(RandomAdvisor::SEED))),
            Self::Replay(_) => {
                ReplayAdvisor::new(recorded.to_vec()).map(|a| Box::new(a) as Box<dyn Advisor>)
            }
            Self::Agent(url) => agent.and_then(|make| {
                make(url)
                    .map_err(|e| tracing::warn!(error = %e, "cannot make the agent advisor"))
                    .ok()
            }),
        }
    }
}

/// The recommendations of a decision log or dataset: every JSON line with a `recommendation` object (lines
/// that are not are skipped: a log may hold other records).
fn read_recorded(path: &Path) -> Result<Vec<Recommendation>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        path: path.display().to_string(),
        source,
    })?;
    let recorded: Vec<Recommendation> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| serde_json::from_value(v.get("recommendation")?.clone()).ok())
        .collect();
    if recorded.is_empty() {
        return Err(CliError::Invalid(format!(
            "{} holds no recorded recommendation",
            path.display()
        )));
    }
    Ok(recorded)
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot serialize output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no traces: {0}")]
    NoTraces(String),
    #[error("cannot read trace directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

fn check_workload_args(args: &WorkloadArgs) -> Result<(), CliError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(CliError::Invalid(format!(
            "--speed must be > 0, got {}",
            args.speed
        )));
    }
    if let Some(h) = args.limit_hours
        && !(h.is_finite() && h > 0.0)
    {
        return Err(CliError::Invalid(format!(
            "--limit-hours must be > 0, got {h}"
        )));
    }
    Ok(())
}

fn progress_bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_string());
    bar
}

/// `ipa simulate`.
pub fn simulate(args: &SimulateArgs) -> Result<(), CliError> {
    check_workload_args(&args.workload)?;
    let settings = SimSettings::default();
    let model = settings.cluster.model;
    let workload = match (&args.trace, args.pattern) {
        (Some(path), _) => trace::load_trace(path, &model, &args.workload.options())?,
        (None, pattern) => {
            let mut w = trace::synthetic(pattern.unwrap_or(Pattern::Sine), args.hours, &model);
            if let Some(limit) = args.workload.limit_hours {
                let steps = ((limit * 3600.0 / w.step_seconds).ceil() as usize).max(1);
                w.demand_rps.truncate(steps);
            }
            w
        }
    };
    let kinds = args.policy.kinds();
    let _span = tracing::info_span!("simulate", workload = %workload.name, policies = kinds.len())
        .entered();
    let steps = workload.demand_rps.len() as u64;
    let bar = progress_bar(steps * kinds.len() as u64, &workload.name);
    let results: Vec<RunResult> = kinds
        .par_iter()
        .map(|&kind| run(&workload, &settings, kind, true, &mut |n| bar.inc(n)))
        .collect();
    bar.finish_and_clear();
    let html = report::render(&workload, &settings, &results)?;
    let path = report::write(&args.report, &html)?;
    let scores: Vec<Score> = results.iter().map(|r| r.score.clone()).collect();
    let provenance = vec![(workload.name.clone(), workload.provenance.clone())];
    print_scores(args.format, &settings, &provenance, &scores)?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// `ipa bench`.
pub fn bench(args: &BenchArgs) -> Result<(), CliError> {
    bench_with(args, None)
}

/// `ipa bench`, with the factory of the live-agent advisor (`--advisor agent:URL`).
pub fn bench_with(args: &BenchArgs, agent: Option<&AgentAdvisorFactory>) -> Result<(), CliError> {
    check_workload_args(&args.workload)?;
    if matches!(args.advisor, Some(AdvisorChoice::Agent(_))) && agent.is_none() {
        return Err(CliError::Invalid(
            "--advisor agent:URL needs the ipa binary (it brings the HTTP client)".to_string(),
        ));
    }
    let paths = if args.trace.is_empty() {
        let dir = match &args.traces_dir {
            Some(dir) => dir.clone(),
            None => default_traces_dir().ok_or_else(|| {
                CliError::NoTraces(
                    "no --trace given, $IPA_TRACES_DIR unset, and no ../shared/traces/nab/ next to the repository"
                        .to_string(),
                )
            })?,
        };
        csv_files(&dir)?
    } else {
        args.trace.clone()
    };
    if paths.is_empty() {
        return Err(CliError::NoTraces("the trace list is empty".to_string()));
    }
    let mut settings = SimSettings::default();
    settings.cluster.in_place_resize = args.in_place_resize;
    let model = settings.cluster.model;
    let options = args.workload.options();
    let workloads: Vec<Workload> = paths
        .par_iter()
        .map(|p| trace::load_trace(p, &model, &options))
        .collect::<Result<_, _>>()?;
    let recorded = match &args.advisor {
        Some(AdvisorChoice::Replay(path)) => read_recorded(path)?,
        _ => Vec::new(),
    };
    // `None` as a job's policy: IPA with the `--advisor`.
    let extra: Vec<Option<PolicyKind>> = args.advisor.iter().map(|_| None).collect();
    let jobs: Vec<(usize, Option<PolicyKind>)> = (0..workloads.len())
        .flat_map(|w| {
            PolicyKind::ALL
                .into_iter()
                .map(Some)
                .chain(extra.iter().copied())
                .map(move |k| (w, k))
        })
        .collect();
    let total: u64 = jobs
        .iter()
        .map(|&(w, _)| workloads[w].demand_rps.len() as u64)
        .sum();
    let _span = tracing::info_span!("bench", traces = workloads.len(), jobs = jobs.len()).entered();
    let bar = progress_bar(total, "bench");
    let scores: Vec<Score> = jobs
        .par_iter()
        .filter_map(|&(w, kind)| {
            let workload = &workloads[w];
            let mut progress = |n| bar.inc(n);
            match kind {
                Some(kind) => Some(run(workload, &settings, kind, false, &mut progress).score),
                None => {
                    let advisor = args.advisor.as_ref()?.build(&recorded, agent)?;
                    let mut ipa = Ipa::new(&settings, advisor);
                    let replicas = settings.initial_replicas(PolicyKind::Ipa, workload);
                    let template = settings.initial_template;
                    Some(
                        run_policy(
                            workload,
                            &settings,
                            &mut ipa,
                            replicas,
                            template,
                            false,
                            &mut progress,
                        )
                        .score,
                    )
                }
            }
        })
        .collect();
    bar.finish_and_clear();
    let provenance: Vec<(String, Provenance)> = workloads
        .iter()
        .map(|w| (w.name.clone(), w.provenance.clone()))
        .collect();
    print_scores(args.format, &settings, &provenance, &scores)
}

/// Every `*.csv` in `dir`, sorted by name.
fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let io = |source| CliError::Dir {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `../shared/traces/nab` beside the repository root (the nearest ancestor of the current directory with a
/// `Cargo.lock`).
pub fn default_traces_dir() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let root = cwd
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())?;
    let dir = root.parent()?.join("shared").join("traces").join("nab");
    dir.is_dir().then_some(dir)
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    settings: &'a SimSettings,
    slo_utilization: f64,
    workloads: Vec<JsonWorkload<'a>>,
    rows: &'a [Score],
    ratios: Vec<Ratios>,
    summary: Summary,
}

#[derive(Serialize)]
struct JsonWorkload<'a> {
    trace: &'a str,
    #[serde(flatten)]
    provenance: &'a Provenance,
}

fn print_scores(
    format: Format,
    settings: &SimSettings,
    workloads: &[(String, Provenance)],
    scores: &[Score],
) -> Result<(), CliError> {
    let ratios = ratios(scores);
    match format {
        Format::Json => {
            let out = JsonOutput {
                settings,
                slo_utilization: crate::score::SLO_UTILIZATION,
                workloads: workloads
                    .iter()
                    .map(|(trace, provenance)| JsonWorkload { trace, provenance })
                    .collect(),
                rows: scores,
                summary: summary(&ratios),
                ratios,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => print!("{}", render_table(workloads, scores, &ratios)),
    }
    Ok(())
}

/// The plain-text tables `ipa bench` prints.
pub fn render_table(
    workloads: &[(String, Provenance)],
    scores: &[Score],
    ratios: &[Ratios],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "workloads (demand = value x scale req/s; 15 s steps):");
    for (name, p) in workloads {
        let _ = writeln!(
            out,
            "  {name:<40} {:<18} scale {:>12.6}  ref value {:>12.3} -> {:.1} req/s  speed {}  gaps {} ({:.0} s)  skipped {}  dup {}",
            p.kind,
            p.scale,
            p.reference_value,
            p.reference_peak_rps,
            p.speed,
            p.gaps,
            p.gap_seconds,
            p.skipped_rows,
            p.duplicate_timestamps
        );
    }
    let _ = writeln!(out);
    let headers = ["trace"]
        .iter()
        .chain(report::SCORE_HEADERS.iter())
        .copied()
        .collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = scores
        .iter()
        .map(|s| {
            let mut row = vec![s.trace.clone()];
            row.extend(report::score_cells(s));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain(std::iter::once(headers[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 2 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(&headers));
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", render(ratios));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::tests::score;

    #[test]
    fn advisor_choices_parse_and_garbage_is_refused() {
        let parse = |s: &str| s.parse::<AdvisorChoice>();
        assert_eq!(parse("random"), Ok(AdvisorChoice::Random));
        assert_eq!(
            parse("replay:log.jsonl"),
            Ok(AdvisorChoice::Replay(PathBuf::from("log.jsonl")))
        );
        assert_eq!(
            parse("agent:http://127.0.0.1:8000"),
            Ok(AdvisorChoice::Agent("http://127.0.0.1:8000".into()))
        );
        for bad in ["", "replay:", "agent:", "llm", "random:1"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The NAB traces beside the repository (CI has a copy of shared/ next to its clone): every one loads, and
    /// a short bench gives one complete row per (trace, policy).
    #[test]
    fn every_nab_trace_loads_and_benches() -> Result<(), CliError> {
        let dir = std::env::var_os("IPA_TRACES_DIR")
            .map(PathBuf::from)
            .or_else(default_traces_dir)
            .ok_or_else(|| CliError::NoTraces("../shared/traces/nab not found".to_string()))?;
        let files = csv_files(&dir)?;
        assert!(
            files.len() >= 17,
            "expected the 17 NAB traces in {}",
            dir.display()
        );
        let settings = SimSettings::default();
        let options = TraceOptions {
            limit_hours: Some(3.0),
            ..TraceOptions::default()
        };
        let mut scores = Vec::new();
        for path in &files {
            let w = trace::load_trace(path, &settings.cluster.model, &options)?;
            assert_eq!(w.demand_rps.len(), 720, "{}", w.name);
            assert!(w.demand_rps.iter().all(|d| d.is_finite() && *d >= 0.0));
            for kind in PolicyKind::ALL {
                scores.push(run(&w, &settings, kind, false, &mut |_| {}).score);
            }
        }
        assert_eq!(scores.len(), files.len() * PolicyKind::ALL.len());
        assert_eq!(ratios(&scores).len(), files.len());
        let table = render_table(&[], &scores, &ratios(&scores));
        assert!(table.contains("ipa/oracle"));
        Ok(())
    }

    #[test]
    fn errors_can_cross_threads_for_anyhow() {
        fn assert_send_sync<T: Send + Sync + 'static + std::error::Error>() {}
        assert_send_sync::<CliError>();
    }

    #[test]
    fn json_rows_have_exactly_the_bench_field_names() -> Result<(), serde_json::Error> {
        let v = serde_json::to_value(score("a", "ipa", 1.0, 0, 0))?;
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let expected = [
            "trace",
            "policy",
            "minutes",
            "cpu_core_hours",
            "memory_gib_hours",
            "slo_violation_minutes",
            "dropped_requests",
            "oom_kills",
            "restarts",
            "scale_actions",
            "slack",
            "theta_u",
            "theta_o",
            "tau_u",
            "tau_o",
            "jitter",
        ];
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        let mut sorted_expected = expected.to_vec();
        sorted_expected.sort_unstable();
        assert_eq!(sorted_keys, sorted_expected);
        Ok(())
    }
}
