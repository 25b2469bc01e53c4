//! Workloads: real `timestamp,value` traces resampled to the simulator step and mapped to requests/s, or
//! synthetic patterns. Everything here is deterministic and states the numbers it used (`Provenance`), so a
//! figure can be reproduced.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::model::AppModel;

/// The simulator's time step.
pub const STEP_SECONDS: f64 = 15.0;
/// A gap between two trace points longer than this many median steps is not interpolated: the last value is
/// held until the next point, and the gap is counted.
pub const GAP_MEDIAN_STEPS: f64 = 3.0;
/// Demand scale: a rate trace's p99 (and a CPU trace's 100 %) equals the capacity of this many reference pods.
pub const REFERENCE_PODS: f64 = 8.0;
/// CPU of the reference pod (the default template's CPU request), in cores.
pub const REFERENCE_POD_CORES: f64 = 1.0;

/// Why a trace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {path}: {source}")]
    Csv {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error(
        "trace {path} has fewer than two usable points ({usable} usable, {skipped} rows skipped)"
    )]
    TooShort {
        path: String,
        usable: usize,
        skipped: usize,
    },
}

/// How trace values become demand in requests/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mapping {
    /// `cpu` when the file name mentions CPU utilization (or is NAB's EC2 CPU series ending in an outage), else `rate`.
    Auto,
    /// A request-rate-like series: scaled so its p99 equals the reference peak.
    Rate,
    /// A CPU-% series: 100 % equals the reference peak.
    Cpu,
}

impl Mapping {
    /// Resolves `Auto` from a trace's file name.
    pub fn resolve(self, file_name: &str) -> Mapping {
        match self {
            Mapping::Auto => {
                let name = file_name.to_ascii_lowercase();
                // NAB's README documents ec2_request_latency_system_failure as a CPU % series despite its name.
                if name.contains("cpu") || name.contains("ec2_request_latency_system_failure") {
                    Mapping::Cpu
                } else {
                    Mapping::Rate
                }
            }
            other => other,
        }
    }
}

/// Knobs for turning a trace into a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceOptions {
    pub mapping: Mapping,
    /// Time compression: 4.0 plays a 5-minute trace step in 75 s of simulated time.
    pub speed: f64,
    /// Keep only the first this-many hours of simulated time.
    pub limit_hours: Option<f64>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            mapping: Mapping::Auto,
            speed: 1.0,
            limit_hours: None,
        }
    }
}

/// How a workload was made: printed in reports and bench output so figures can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// `rate`, `cpu` or `synthetic:<pattern>`.
    pub kind: String,
    /// Requests/s per trace unit (demand = value × scale).
    pub scale: f64,
    /// The reference peak in requests/s (REFERENCE_PODS × capacity of a REFERENCE_POD_CORES pod).
    pub reference_peak_rps: f64,
    /// The trace value that was mapped to the reference peak (p99 for rate, 100 for cpu).
    pub reference_value: f64,
    pub speed: f64,
    pub rows: usize,
    pub skipped_rows: usize,
    pub duplicate_timestamps: usize,
    pub out_of_order_rows: usize,
    pub median_step_seconds: f64,
    /// Gaps longer than GAP_MEDIAN_STEPS × the median step (last value held across them).
    pub gaps: usize,
    pub gap_seconds: f64,
}

/// A demand series on the simulator's grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub name: String,
    /// Unix seconds of the first step.
    pub start_unix: i64,
    pub step_seconds: f64,
    /// Offered requests/s for each step.
    pub demand_rps: Vec<f64>,
    pub provenance: Provenance,
}

impl Workload {
    pub fn minutes(&self) -> f64 {
        self.demand_rps.len() as f64 * self.step_seconds / 60.0
    }

    /// Unix seconds of step `k`.
    pub fn time_of(&self, step: usize) -> i64 {
        self.start_unix + (step as f64 * self.step_seconds).round() as i64
    }
}

/// The reference peak in requests/s for a model.
pub fn reference_peak_rps(model: &AppModel) -> f64 {
    REFERENCE_PODS * model.capacity_rps(REFERENCE_POD_CORES)
}

/// Parses a timestamp: unix seconds (integer or fractional), RFC 3339, or a civil `YYYY-MM-DD HH:MM:SS`
/// (NAB's format, taken as UTC).
pub fn parse_timestamp(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond() as f64 / 1000.0);
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    let ts = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_millisecond() as f64 / 1000.0)
}

/// A cleaned trace: points sorted by time with unique timestamps, plus what cleaning found.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanTrace {
    pub points: Vec<(f64, f64)>,
    pub rows: usize,
    pub skipped_rows: usize,
    pub duplicate_timestamps: usize,
    pub out_of_order_rows: usize,
}

/// Reads `timestamp,value` CSV with a header line. Rows whose timestamp or value does not parse, or whose
/// value is not finite, are skipped and counted; negative values are clamped to 0 (a rate cannot be negative).
/// Points are sorted by time; points sharing a timestamp are averaged.
pub fn read_csv(reader: impl Read, path: &str) -> Result<CleanTrace, TraceError> {
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut raw: Vec<(f64, f64)> = Vec::new();
    let (mut rows, mut skipped, mut out_of_order) = (0usize, 0usize, 0usize);
    for record in csv_reader.records() {
        let record = record.map_err(|source| TraceError::Csv {
            path: path.to_string(),
            source,
        })?;
        rows += 1;
        let parsed = match (record.get(0), record.get(1)) {
            (Some(t), Some(v)) => parse_timestamp(t).zip(v.parse::<f64>().ok()),
            _ => None,
        };
        match parsed {
            Some((t, v)) if v.is_finite() => {
                if raw.last().is_some_and(|&(last, _)| t < last) {
                    out_of_order += 1;
                }
                raw.push((t, v.max(0.0)));
            }
            _ => skipped += 1,
        }
    }
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(raw.len());
    let mut duplicates = 0usize;
    let mut run = 1.0f64;
    for (t, v) in raw {
        match points.last_mut() {
            Some(last) if last.0 == t => {
                // Running mean of the values sharing this timestamp.
                run += 1.0;
                last.1 += (v - last.1) / run;
                duplicates += 1;
            }
            _ => {
                run = 1.0;
                points.push((t, v));
            }
        }
    }
    if points.len() < 2 {
        return Err(TraceError::TooShort {
            path: path.to_string(),
            usable: points.len(),
            skipped,
        });
    }
    Ok(CleanTrace {
        points,
        rows,
        skipped_rows: skipped,
        duplicate_timestamps: duplicates,
        out_of_order_rows: out_of_order,
    })
}

/// The result of resampling: values on the grid, and what was found about gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Resampled {
    pub values: Vec<f64>,
    pub median_step_seconds: f64,
    pub gaps: usize,
    pub gap_seconds: f64,
}

/// Resamples cleaned points (sorted, unique times) onto a grid of `step` seconds from the first point, after
/// compressing time by `speed`. Inside normal steps the value is interpolated linearly; across a gap longer
/// than GAP_MEDIAN_STEPS × the median step the last value is held.
pub fn resample(
    points: &[(f64, f64)],
    step: f64,
    speed: f64,
    limit_steps: Option<usize>,
) -> Resampled {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let Some(&(t0, _)) = points.first() else {
        return Resampled {
            values: Vec::new(),
            median_step_seconds: 0.0,
            gaps: 0,
            gap_seconds: 0.0,
        };
    };
    let times: Vec<f64> = points.iter().map(|&(t, _)| (t - t0) / speed).collect();
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let median = steps.get(steps.len() / 2).copied().unwrap_or(step);
    let gap_threshold = GAP_MEDIAN_STEPS * median;
    let (mut gaps, mut gap_seconds) = (0usize, 0.0f64);
    for w in times.windows(2) {
        if w[1] - w[0] > gap_threshold {
            gaps += 1;
            gap_seconds += (w[1] - w[0]) * speed;
        }
    }
    let end = times.last().copied().unwrap_or(0.0);
    let mut count = (end / step).floor() as usize + 1;
    if let Some(limit) = limit_steps {
        count = count.min(limit.max(1));
    }
    let mut values = Vec::with_capacity(count);
    let mut i = 0usize;
    for k in 0..count {
        let t = k as f64 * step;
        while i + 1 < times.len() && times[i + 1] <= t {
            i += 1;
        }
        let (ta, va) = (times[i], points[i].1);
        let value = match (times.get(i + 1), points.get(i + 1)) {
            (Some(&tb), Some(&(_, vb))) if tb - ta <= gap_threshold && tb > ta => {
                va + (vb - va) * (t - ta) / (tb - ta)
            }
            _ => va,
        };
        values.push(value);
    }
    Resampled {
        values,
        median_step_seconds: median * speed,
        gaps,
        gap_seconds,
    }
}

/// Nearest-rank p99 of a series (0 for an empty one).
pub fn p99(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    ipa_core::stats::percentile_sorted(&sorted, 0.99).unwrap_or(0.0)
}

/// Loads a trace file into a workload.
pub fn load_trace(
    path: &Path,
    model: &AppModel,
    options: &TraceOptions,
) -> Result<Workload, TraceError> {
    let display = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: display.clone(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| display.clone());
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean = read_csv(std::io::BufReader::new(file), &display)?;
    Ok(workload_from_clean(
        name, &file_name, &clean, model, options,
    ))
}

/// Maps a cleaned trace to a workload (see `load_trace`).
pub fn workload_from_clean(
    name: String,
    file_name: &str,
    clean: &CleanTrace,
    model: &AppModel,
    options: &TraceOptions,
) -> Workload {
    let limit_steps = options
        .limit_hours
        .filter(|h| h.is_finite() && *h > 0.0)
        .map(|h| (h * 3600.0 / STEP_SECONDS).ceil() as usize);
    let resampled = resample(&clean.points, STEP_SECONDS, options.speed, limit_steps);
    let peak = reference_peak_rps(model);
    let mapping = options.mapping.resolve(file_name);
    let (kind, reference_value) = match mapping {
        Mapping::Cpu => ("cpu", 100.0),
        _ => {
            // Scale on the full trace's p99 so --limit-hours does not change the scale.
            let full: Vec<f64> = clean.points.iter().map(|p| p.1).collect();
            let mut reference = p99(&full);
            if reference <= 0.0 {
                reference = full.iter().copied().fold(0.0, f64::max);
            }
            ("rate", reference)
        }
    };
    let scale = if reference_value > 0.0 {
        peak / reference_value
    } else {
        0.0
    };
    let demand_rps = resampled.values.iter().map(|v| v * scale).collect();
    let start_unix = clean
        .points
        .first()
        .map(|p| p.0.floor() as i64)
        .unwrap_or(0);
    Workload {
        name,
        start_unix,
        step_seconds: STEP_SECONDS,
        demand_rps,
        provenance: Provenance {
            kind: kind.to_string(),
            scale,
            reference_peak_rps: peak,
            reference_value,
            speed: options.speed,
            rows: clean.rows,
            skipped_rows: clean.skipped_rows,
            duplicate_timestamps: clean.duplicate_timestamps,
            out_of_order_rows: clean.out_of_order_rows,
            median_step_seconds: resampled.median_step_seconds,
            gaps: resampled.gaps,
            gap_seconds: resampled.gap_seconds,
        },
    }
}

/// Synthetic demand shapes, relative to the reference peak P (8 one-core pods' worth: 398 req/s by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// 0.5 P all the time (P = the reference peak, 398 req/s).
    Constant,
    /// 0.2 P, then 0.8 P from a third of the run, back to 0.2 P at two thirds.
    Step,
    /// 0.2 P with a 1.0 P spike for 10 minutes every 2 hours (ramping up over one minute).
    Spike,
    /// A daily cycle: 0.5 P ± 0.4 P with a 24 h period, lowest at midnight.
    Sine,
}

impl Pattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Constant => "constant",
            Pattern::Step => "step",
            Pattern::Spike => "spike",
            Pattern::Sine => "sine",
        }
    }
}

/// Unix time at which synthetic workloads start (2024-01-01T00:00:00Z): a fixed epoch keeps runs deterministic.
pub const SYNTHETIC_START_UNIX: i64 = 1_704_067_200;

/// A synthetic workload of `hours` (clamped to [1 step, 31 days]).
pub fn synthetic(pattern: Pattern, hours: f64, model: &AppModel) -> Workload {
    let peak = reference_peak_rps(model);
    let hours = if hours.is_finite() {
        hours.clamp(0.01, 24.0 * 31.0)
    } else {
        24.0
    };
    let count = ((hours * 3600.0 / STEP_SECONDS).ceil() as usize).max(1);
    let total = count as f64 * STEP_SECONDS;
    let demand_rps = (0..count)
        .map(|k| {
            let t = k as f64 * STEP_SECONDS;
            let fraction = match pattern {
                Pattern::Constant => 0.5,
                Pattern::Step => {
                    if t >= total / 3.0 && t < 2.0 * total / 3.0 {
                        0.8
                    } else {
                        0.2
                    }
                }
                Pattern::Spike => {
                    let into = t % 7200.0;
                    let spike_start = 3600.0;
                    if into >= spike_start && into < spike_start + 600.0 {
                        0.2 + 0.8 * ((into - spike_start) / 60.0).min(1.0)
                    } else {
                        0.2
                    }
                }
                Pattern::Sine => 0.5 - 0.4 * (2.0 * std::f64::consts::PI * t / 86_400.0).cos(),
            };
            fraction * peak
        })
        .collect();
    Workload {
        name: format!("synthetic-{}", pattern.as_str()),
        start_unix: SYNTHETIC_START_UNIX,
        step_seconds: STEP_SECONDS,
        demand_rps,
        provenance: Provenance {
            kind: format!("synthetic:{}", pattern.as_str()),
            scale: peak,
            reference_peak_rps: peak,
            reference_value: 1.0,
            speed: 1.0,
            rows: 0,
            skipped_rows: 0,
            duplicate_timestamps: 0,
            out_of_order_rows: 0,
            median_step_seconds: STEP_SECONDS,
            gaps: 0,
            gap_seconds: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_timestamp_forms() {
        assert_eq!(parse_timestamp("1970-01-01 00:01:00"), Some(60.0));
        assert_eq!(parse_timestamp("1970-01-01T00:01:00Z"), Some(60.0));
        assert_eq!(parse_timestamp("1970-01-01T01:01:00+01:00"), Some(60.0));
        assert_eq!(parse_timestamp("60"), Some(60.0));
        assert_eq!(parse_timestamp("60.5"), Some(60.5));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("inf"), None);
    }

    #[test]
    fn cleaning_sorts_dedupes_and_skips_garbage() -> Result<(), TraceError> {
        let csv = "timestamp,value\n\
                   2014-04-10 00:10:00,3\n\
                   2014-04-10 00:00:00,1\n\
                   2014-04-10 00:05:00,2\n\
                   2014-04-10 00:05:00,4\n\
                   not a time,5\n\
                   2014-04-10 00:15:00,NaN\n\
                   2014-04-10 00:20:00,-7\n";
        let clean = read_csv(csv.as_bytes(), "test")?;
        assert_eq!(clean.rows, 7);
        assert_eq!(clean.skipped_rows, 2);
        assert_eq!(clean.duplicate_timestamps, 1);
        assert_eq!(clean.out_of_order_rows, 1);
        let values: Vec<f64> = clean.points.iter().map(|p| p.1).collect();
        assert_eq!(values, vec![1.0, 3.0, 3.0, 0.0]);
        Ok(())
    }

    #[test]
    fn too_short_is_an_error() {
        assert!(read_csv("t,v\n1,2\n".as_bytes(), "x").is_err());
        assert!(read_csv("".as_bytes(), "x").is_err());
    }

    #[test]
    fn interpolates_inside_steps_and_holds_across_gaps() {
        // Median step 60 s; the 600 s hole is a gap.
        let points = [
            (0.0, 0.0),
            (60.0, 60.0),
            (120.0, 120.0),
            (720.0, 0.0),
            (780.0, 60.0),
        ];
        let r = resample(&points, 15.0, 1.0, None);
        assert_eq!(r.median_step_seconds, 60.0);
        assert_eq!(r.gaps, 1);
        assert_eq!(r.gap_seconds, 600.0);
        assert_eq!(r.values.len(), 53);
        assert_eq!(r.values[1], 15.0);
        assert_eq!(r.values[8], 120.0);
        assert_eq!(r.values[20], 120.0); // held inside the gap
        assert_eq!(r.values[49], 15.0);
    }

    #[test]
    fn speed_compresses_time_and_limit_truncates() {
        let points = [(0.0, 1.0), (300.0, 1.0), (600.0, 1.0)];
        assert_eq!(resample(&points, 15.0, 1.0, None).values.len(), 41);
        assert_eq!(resample(&points, 15.0, 4.0, None).values.len(), 11);
        assert_eq!(resample(&points, 15.0, 1.0, Some(5)).values.len(), 5);
    }

    #[test]
    fn rate_traces_scale_p99_to_the_reference_peak() {
        let model = AppModel::default();
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64 * 300.0, (i % 100) as f64))
            .collect();
        let clean = CleanTrace {
            points,
            rows: 1000,
            skipped_rows: 0,
            duplicate_timestamps: 0,
            out_of_order_rows: 0,
        };
        let w = workload_from_clean(
            "x".into(),
            "elb.csv",
            &clean,
            &model,
            &TraceOptions::default(),
        );
        assert_eq!(w.provenance.kind, "rate");
        let peak = reference_peak_rps(&model);
        assert!((p99(&w.demand_rps) - peak).abs() / peak < 0.02);
        let cpu = workload_from_clean(
            "x".into(),
            "ec2_cpu_utilization.csv",
            &clean,
            &model,
            &TraceOptions::default(),
        );
        assert_eq!(cpu.provenance.kind, "cpu");
        assert!((cpu.provenance.scale - peak / 100.0).abs() < 1e-9);
    }

    #[test]
    fn synthetic_patterns_have_the_stated_shape() {
        let model = AppModel::default();
        let peak = reference_peak_rps(&model);
        let sine = synthetic(Pattern::Sine, 24.0, &model);
        assert_eq!(sine.demand_rps.len(), 5760);
        let max = sine.demand_rps.iter().copied().fold(0.0, f64::max);
        assert!((max - 0.9 * peak).abs() < 1e-6 * peak);
        let step = synthetic(Pattern::Step, 3.0, &model);
        assert_eq!(step.demand_rps[0], 0.2 * peak);
        assert_eq!(step.demand_rps[360], 0.8 * peak);
    }

    proptest! {
        #[test]
        fn resampling_stays_within_the_input_range(
            mut raw in prop::collection::vec((0.0f64..1e6, 0.0f64..1e4), 2..60),
            speed in 0.5f64..8.0,
        ) {
            raw.sort_by(|a, b| a.0.total_cmp(&b.0));
            raw.dedup_by(|a, b| a.0 == b.0);
            prop_assume!(raw.len() >= 2);
            let lo = raw.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = raw.iter().map(|p| p.1).fold(0.0, f64::max);
            let r = resample(&raw, 15.0, speed, Some(5000));
            prop_assert!(!r.values.is_empty());
            for v in r.values {
                prop_assert!(v >= lo - 1e-9 && v <= hi + 1e-9);
            }
        }

        #[test]
        fn arbitrary_csv_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = read_csv(bytes.as_slice(), "fuzz");
        }
    }
}
