//! The decision-quality targets `ipa bench` checks and prints: IPA against HPA (it must be worth replacing),
//! against the perfect-foresight oracle, against VPA's restarts, and against itself with a random advisor.

use std::fmt::Write as _;

use serde::Serialize;

use crate::score::Score;

/// Per-trace comparison. `None` where a row the figure needs is missing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    pub trace: String,
    /// ipa cpu_core_hours / hpa cpu_core_hours.
    pub ipa_over_hpa_cost: Option<f64>,
    /// ipa cpu_core_hours / oracle cpu_core_hours.
    pub ipa_over_oracle_cost: Option<f64>,
    pub ipa_slo_minutes: Option<u64>,
    pub hpa_slo_minutes: Option<u64>,
    /// ipa costs no more than hpa and has no more SLO minutes.
    pub beats_hpa: Option<bool>,
    /// ipa+random cpu_core_hours / ipa cpu_core_hours.
    pub random_over_ipa_cost: Option<f64>,
    /// ipa+random: cost ≤ 1.3 × ipa's and SLO minutes ≤ 1.5 × ipa's + 5.
    pub random_within_bounds: Option<bool>,
    pub ipa_restarts: Option<u64>,
    pub vpa_restarts: Option<u64>,
}

/// The run as a whole, against the targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub traces: usize,
    /// Traces where ipa ≤ hpa on both cost and SLO minutes (target: all but one).
    pub traces_beating_hpa: usize,
    /// Median ipa/hpa cost (target ≤ 0.90) and ipa/oracle cost (target ≤ 1.10).
    pub median_ipa_over_hpa_cost: Option<f64>,
    pub median_ipa_over_oracle_cost: Option<f64>,
    /// Traces where hpa has ≥ 10 SLO minutes, and of them those where ipa has ≤ half of hpa's.
    pub traces_hpa_slo_ge_10: usize,
    pub of_them_ipa_halves_slo: usize,
    pub ipa_restarts: u64,
    pub vpa_restarts: u64,
    /// Traces with an ipa+random row, and of them those within its bounds.
    pub traces_with_random: usize,
    pub random_within_bounds: usize,
}

/// Computes the per-trace ratios for every trace in `scores`.
pub fn ratios(scores: &[Score]) -> Vec<Ratios> {
    let mut traces: Vec<&str> = Vec::new();
    for s in scores {
        if !traces.contains(&s.trace.as_str()) {
            traces.push(&s.trace);
        }
    }
    traces
        .into_iter()
        .map(|t| trace_ratios(scores, t))
        .collect()
}

fn trace_ratios(scores: &[Score], trace: &str) -> Ratios {
    let find = |p: &str| scores.iter().find(|s| s.trace == trace && s.policy == p);
    let (ipa, hpa, vpa, oracle, random) = (
        find("ipa"),
        find("hpa"),
        find("vpa"),
        find("oracle"),
        find("ipa+random"),
    );
    let cost_over = |a: Option<&Score>, b: Option<&Score>| {
        a.zip(b)
            .filter(|(_, b)| b.cpu_core_hours > 0.0)
            .map(|(a, b)| a.cpu_core_hours / b.cpu_core_hours)
    };
    Ratios {
        trace: trace.to_string(),
        ipa_over_hpa_cost: cost_over(ipa, hpa),
        ipa_over_oracle_cost: cost_over(ipa, oracle),
        ipa_slo_minutes: ipa.map(|s| s.slo_violation_minutes),
        hpa_slo_minutes: hpa.map(|s| s.slo_violation_minutes),
        beats_hpa: ipa.zip(hpa).map(|(i, h)| {
            i.cpu_core_hours <= h.cpu_core_hours
                && i.slo_violation_minutes <= h.slo_violation_minutes
        }),
        random_over_ipa_cost: cost_over(random, ipa),
        random_within_bounds: random.zip(ipa).map(|(r, i)| {
            r.cpu_core_hours <= 1.3 * i.cpu_core_hours
                && r.slo_violation_minutes as f64 <= 1.5 * i.slo_violation_minutes as f64 + 5.0
        }),
        ipa_restarts: ipa.map(|s| s.restarts),
        vpa_restarts: vpa.map(|s| s.restarts),
    }
}

/// The summary of `ratios`.
pub fn summary(ratios: &[Ratios]) -> Summary {
    let count = |f: &dyn Fn(&Ratios) -> bool| ratios.iter().filter(|r| f(r)).count();
    let median = |f: &dyn Fn(&Ratios) -> Option<f64>| {
        let mut v: Vec<f64> = ratios.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    };
    let hpa_heavy = |r: &Ratios| r.hpa_slo_minutes.is_some_and(|h| h >= 10);
    Summary {
        traces: ratios.len(),
        traces_beating_hpa: count(&|r| r.beats_hpa == Some(true)),
        median_ipa_over_hpa_cost: median(&|r| r.ipa_over_hpa_cost),
        median_ipa_over_oracle_cost: median(&|r| r.ipa_over_oracle_cost),
        traces_hpa_slo_ge_10: count(&hpa_heavy),
        of_them_ipa_halves_slo: count(&|r| {
            hpa_heavy(r)
                && r.ipa_slo_minutes
                    .zip(r.hpa_slo_minutes)
                    .is_some_and(|(i, h)| i * 2 <= h)
        }),
        ipa_restarts: ratios.iter().filter_map(|r| r.ipa_restarts).sum(),
        vpa_restarts: ratios.iter().filter_map(|r| r.vpa_restarts).sum(),
        traces_with_random: count(&|r| r.random_within_bounds.is_some()),
        random_within_bounds: count(&|r| r.random_within_bounds == Some(true)),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}

fn fmt_count<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn fmt_met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "n/a",
    }
}

/// The targets as a table (per trace) and a summary, for `ipa bench --format table`.
pub fn render(ratios: &[Ratios]) -> String {
    let mut out = String::new();
    let tw = ratios
        .iter()
        .map(|r| r.trace.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:<tw$}  {:>7}  {:>10}  {:>7}  {:>7}  {:>9}  {:>10}  {:>6}",
        "trace", "ipa/hpa", "ipa/oracle", "ipa SLO", "hpa SLO", "beats hpa", "random/ipa", "bounds"
    );
    for r in ratios {
        let _ = writeln!(
            out,
            "{:<tw$}  {:>7}  {:>10}  {:>7}  {:>7}  {:>9}  {:>10}  {:>6}",
            r.trace,
            fmt_ratio(r.ipa_over_hpa_cost),
            fmt_ratio(r.ipa_over_oracle_cost),
            fmt_count(r.ipa_slo_minutes),
            fmt_count(r.hpa_slo_minutes),
            fmt_met(r.beats_hpa),
            fmt_ratio(r.random_over_ipa_cost),
            fmt_met(r.random_within_bounds),
        );
    }
    let s = summary(ratios);
    let _ = writeln!(
        out,
        "\nipa beats hpa (cost and SLO) on {} of {} traces (target: all but one)",
        s.traces_beating_hpa, s.traces
    );
    let _ = writeln!(
        out,
        "median ipa/hpa cost {} (target <= 0.90); median ipa/oracle cost {} (target <= 1.10)",
        fmt_ratio(s.median_ipa_over_hpa_cost),
        fmt_ratio(s.median_ipa_over_oracle_cost)
    );
    let _ = writeln!(
        out,
        "traces where hpa has >= 10 SLO minutes: {}, ipa halves them on {}",
        s.traces_hpa_slo_ge_10, s.of_them_ipa_halves_slo
    );
    let _ = writeln!(
        out,
        "restarts: ipa {} vs vpa {} (target: fewer)",
        s.ipa_restarts, s.vpa_restarts
    );
    if s.traces_with_random > 0 {
        let _ = writeln!(
            out,
            "ipa+random within 1.3x cost and 1.5x+5 SLO minutes of ipa on {} of {} traces",
            s.random_within_bounds, s.traces_with_random
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A score row with the fields the targets read (the others zero), for tests.
    pub(crate) fn score(trace: &str, policy: &str, cost: f64, slo: u64, restarts: u64) -> Score {
        Score {
            trace: trace.into(),
            policy: policy.into(),
            minutes: 1.0,
            cpu_core_hours: cost,
            memory_gib_hours: 0.0,
            slo_violation_minutes: slo,
            dropped_requests: 0.0,
            oom_kills: 0,
            restarts,
            scale_actions: 0,
            slack: 0.0,
            theta_u: 0.0,
            theta_o: 0.0,
            tau_u: 0.0,
            tau_o: 0.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn ratios_and_summary() {
        let scores = [
            score("a", "ipa", 11.0, 2, 1),
            score("a", "hpa", 20.0, 10, 0),
            score("a", "vpa", 15.0, 0, 4),
            score("a", "oracle", 10.0, 0, 0),
            score("a", "ipa+random", 14.0, 8, 0),
        ];
        let r = ratios(&scores);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ipa_over_oracle_cost, Some(1.1));
        assert_eq!(r[0].ipa_over_hpa_cost, Some(0.55));
        assert_eq!(r[0].beats_hpa, Some(true));
        assert_eq!(r[0].random_within_bounds, Some(true));
        let s = summary(&r);
        assert_eq!(
            (
                s.traces_beating_hpa,
                s.traces_hpa_slo_ge_10,
                s.of_them_ipa_halves_slo
            ),
            (1, 1, 1)
        );
        assert_eq!((s.ipa_restarts, s.vpa_restarts), (1, 4));
        assert!(render(&r).contains("beats hpa"));
    }
}
