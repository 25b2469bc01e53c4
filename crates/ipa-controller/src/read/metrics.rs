//! Prometheus, read once per metric for every target of an IPA: the query count per cycle does not grow with
//! the number of targets.

use std::collections::HashMap;

use futures::future::join_all;
use ipa_core::TargetRef;

use crate::Error;
use crate::read::prometheus::{Prometheus, Sample, Series};
use crate::read::promql::{self, Selection, Windows};
use tracing::warn;

/// One cycle's Prometheus results. `None`: the query failed (different from an empty result).
#[derive(Debug, Clone, Default)]
pub struct CycleMetrics {
    pub cpu: Option<Vec<Series>>,
    pub memory: Option<Vec<Series>>,
    /// `None` also when no target has an ingress (then it is not expected).
    pub request_rate: Option<Vec<Series>>,
    pub restarts: Option<Vec<Sample>>,
    pub oom_kills: Option<Vec<Sample>>,
    pub free_memory: Option<Vec<Sample>>,
    pub free_cpu: Option<Vec<Sample>>,
    /// Each `demandQuery` target's own demand series (`None`: the query failed or was not allowed).
    pub demand: HashMap<TargetRef, Option<Vec<Series>>>,
}

/// Time frame of the cycle (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub now: i64,
    pub step: u64,
    pub stats_window: u64,
    pub history: u64,
}

/// One cycle's query results, and the names of the queries that failed (their detail is logged only).
#[derive(Debug, Default)]
pub struct Queried {
    pub metrics: CycleMetrics,
    pub errors: Vec<String>,
}

/// The `demandQuery` of each target that has one, and whether the controller runs them.
#[derive(Debug, Default)]
pub struct DemandQueries {
    pub queries: Vec<(TargetRef, String)>,
    pub allowed: bool,
}

/// What status says when the controller does not run `demandQuery`.
pub const DEMAND_QUERY_DISABLED: &str =
    "demandQuery (not run: the controller is started without --allow-demand-query)";

/// Runs every metric query of the cycle concurrently; a failed query leaves its metric `None`.
pub async fn query_all(
    prom: &Prometheus,
    sel: &Selection,
    w: Windows,
    frame: Frame,
    demand: &DemandQueries,
) -> Queried {
    let start = frame.now - frame.history as i64;
    let stats_start = frame.now - frame.stats_window as i64;
    let (cpu_q, mem_q, rate_q) = (sel.cpu(w), sel.memory(), sel.request_rate(w));
    let (restarts_q, oom_q) = (sel.restarts(w), sel.oom_kills(w));
    let rate = async {
        match &rate_q {
            Some(q) => Some(prom.query_range(q, start, frame.now, frame.step).await),
            None => None,
        }
    };
    let custom = async {
        if !demand.allowed {
            return Vec::new();
        }
        join_all(demand.queries.iter().map(|(target, q)| async move {
            (
                target.clone(),
                prom.query_range(q, start, frame.now, frame.step).await,
            )
        }))
        .await
    };
    let (cpu, mem, rate, restarts, oom, free_mem, free_cpu, custom) = tokio::join!(
        prom.query_range(&cpu_q, start, frame.now, frame.step),
        prom.query_range(&mem_q, stats_start, frame.now, frame.step),
        rate,
        prom.query(&restarts_q, frame.now),
        prom.query(&oom_q, frame.now),
        prom.query(promql::FREE_MEMORY, frame.now),
        prom.query(promql::FREE_CPU, frame.now),
        custom,
    );
    let mut errors = Vec::new();
    let metrics = CycleMetrics {
        cpu: keep(&mut errors, "cpu", cpu),
        memory: keep(&mut errors, "memory", mem),
        request_rate: rate.and_then(|r| keep(&mut errors, "request_rate", r)),
        restarts: keep(&mut errors, "restarts", restarts),
        oom_kills: keep(&mut errors, "oom_kills", oom),
        free_memory: keep(&mut errors, "free_memory", free_mem),
        free_cpu: keep(&mut errors, "free_cpu", free_cpu),
        demand: HashMap::new(),
    };
    let mut metrics = metrics;
    if !demand.allowed && !demand.queries.is_empty() {
        errors.push(DEMAND_QUERY_DISABLED.to_string());
    }
    for (target, result) in custom {
        let what = format!("demandQuery of {target}");
        metrics
            .demand
            .insert(target, keep(&mut errors, &what, result));
    }
    Queried { metrics, errors }
}

/// The detail (URL, HTTP status, "timed out") goes to the log only: status is readable by whoever may read the
/// IPA, and must not become a network probe.
fn keep<T>(errors: &mut Vec<String>, what: &str, r: Result<T, Error>) -> Option<T> {
    r.map_err(|e| {
        warn!(query = what, error = %e, "prometheus query failed");
        errors.push(what.to_string());
    })
    .ok()
}
