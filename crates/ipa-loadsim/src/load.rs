//! What load each target Deployment receives: a constant rate, a recorded trace or a synthetic pattern,
//! optionally played faster than real time. Pure: no IO except reading a trace file on request.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipa_sim::trace::{CleanTrace, TraceError, read_csv};
use serde::{Deserialize, Serialize};

/// Identifies a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeploymentId {
    pub namespace: String,
    pub deployment: String,
}

/// Why a load request or a trace was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("give exactly one of `rps`, `trace` and `pattern`")]
    AmbiguousSource,
    #[error("`{field}` must be a finite number {constraint}, got {value}")]
    OutOfRange {
        field: &'static str,
        constraint: &'static str,
        value: f64,
    },
    #[error("`namespace` and `deployment` must not be empty")]
    MissingTarget,
    #[error("give at most one of `scale` and `peak_rps` for a trace")]
    AmbiguousTraceScale,
    #[error(transparent)]
    Trace(#[from] ipa_sim::trace::TraceError),
}

fn check(
    field: &'static str,
    value: f64,
    min: f64,
    constraint: &'static str,
) -> Result<f64, LoadError> {
    if value.is_finite() && value >= min {
        Ok(value)
    } else {
        Err(LoadError::OutOfRange {
            field,
            constraint,
            value,
        })
    }
}

fn check_positive(field: &'static str, value: f64) -> Result<f64, LoadError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(LoadError::OutOfRange {
            field,
            constraint: "> 0",
            value,
        })
    }
}

/// A synthetic load shape; times are in (possibly compressed) trace seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// `base_rps + amplitude_rps · sin(2πt / period_seconds)`, never below zero.
    Sine {
        base_rps: f64,
        amplitude_rps: f64,
        period_seconds: f64,
    },
    /// `low_rps` for the first half of each period, `high_rps` for the second.
    Square {
        low_rps: f64,
        high_rps: f64,
        period_seconds: f64,
    },
    /// Linear from `from_rps` to `to_rps` over `duration_seconds`, then holds `to_rps`.
    Ramp {
        from_rps: f64,
        to_rps: f64,
        duration_seconds: f64,
    },
    /// `base_rps`, with `spike_rps` for the first `spike_seconds` of every `period_seconds`.
    Spike {
        base_rps: f64,
        spike_rps: f64,
        period_seconds: f64,
        spike_seconds: f64,
    },
}

impl Pattern {
    fn validate(&self) -> Result<(), LoadError> {
        match *self {
            Self::Sine {
                base_rps,
                amplitude_rps,
                period_seconds,
            } => {
                check("base_rps", base_rps, 0.0, ">= 0")?;
                check("amplitude_rps", amplitude_rps, 0.0, ">= 0")?;
                check_positive("period_seconds", period_seconds)?;
            }
            Self::Square {
                low_rps,
                high_rps,
                period_seconds,
            } => {
                check("low_rps", low_rps, 0.0, ">= 0")?;
                check("high_rps", high_rps, 0.0, ">= 0")?;
                check_positive("period_seconds", period_seconds)?;
            }
            Self::Ramp {
                from_rps,
                to_rps,
                duration_seconds,
            } => {
                check("from_rps", from_rps, 0.0, ">= 0")?;
                check("to_rps", to_rps, 0.0, ">= 0")?;
                check_positive("duration_seconds", duration_seconds)?;
            }
            Self::Spike {
                base_rps,
                spike_rps,
                period_seconds,
                spike_seconds,
            } => {
                check("base_rps", base_rps, 0.0, ">= 0")?;
                check("spike_rps", spike_rps, 0.0, ">= 0")?;
                check_positive("period_seconds", period_seconds)?;
                check("spike_seconds", spike_seconds, 0.0, ">= 0")?;
            }
        }
        Ok(())
    }

    /// Requests/s at `t` seconds into the pattern.
    pub fn rps_at(&self, t: f64) -> f64 {
        let rps = match *self {
            Self::Sine {
                base_rps,
                amplitude_rps,
                period_seconds,
            } => base_rps + amplitude_rps * (TAU * t / period_seconds).sin(),
            Self::Square {
                low_rps,
                high_rps,
                period_seconds,
            } => {
                if t.rem_euclid(period_seconds) < period_seconds / 2.0 {
                    low_rps
                } else {
                    high_rps
                }
            }
            Self::Ramp {
                from_rps,
                to_rps,
                duration_seconds,
            } => from_rps + (to_rps - from_rps) * (t / duration_seconds).clamp(0.0, 1.0),
            Self::Spike {
                base_rps,
                spike_rps,
                period_seconds,
                spike_seconds,
            } => {
                if t.rem_euclid(period_seconds) < spike_seconds {
                    spike_rps
                } else {
                    base_rps
                }
            }
        };
        rps.max(0.0)
    }
}

/// A `timestamp,value` series (one header line), as in `../shared/traces/`: times relative to the first point.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// (seconds since the first point, value), strictly increasing in time.
    points: Vec<(f64, f64)>,
}

impl Trace {
    /// A trace from the simulator's cleaned points (sorted, unique times), rebased to start at zero.
    pub fn from_clean(clean: &CleanTrace) -> Self {
        let t0 = clean.points.first().map_or(0.0, |&(t, _)| t);
        Self {
            points: clean.points.iter().map(|&(t, v)| (t - t0, v)).collect(),
        }
    }

    /// Parses CSV text with the simulator's loader (`ipa_sim::trace::read_csv`), so both read traces alike.
    pub fn parse_csv(text: &str) -> Result<Self, LoadError> {
        Ok(Self::from_clean(&read_csv(text.as_bytes(), "<request>")?))
    }

    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let display = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            path: display.clone(),
            source,
        })?;
        Ok(Self::from_clean(&read_csv(
            std::io::BufReader::new(file),
            &display,
        )?))
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Seconds from the first to the last point.
    pub fn duration_seconds(&self) -> f64 {
        self.points.last().map_or(0.0, |&(t, _)| t)
    }

    pub fn max_value(&self) -> f64 {
        self.points.iter().map(|&(_, v)| v).fold(0.0, f64::max)
    }

    /// The value at `t` seconds, interpolated linearly; the trace loops when `t` passes its end.
    pub fn value_at(&self, t: f64) -> f64 {
        let duration = self.duration_seconds();
        let (Some(&(_, first)), true) = (self.points.first(), duration > 0.0) else {
            return 0.0;
        };
        let t = t.rem_euclid(duration);
        let after = self.points.partition_point(|&(pt, _)| pt <= t);
        match (
            self.points.get(after.wrapping_sub(1)),
            self.points.get(after),
        ) {
            (Some(&(t1, v1)), Some(&(t2, v2))) => v1 + (v2 - v1) * (t - t1) / (t2 - t1),
            (Some(&(_, v)), None) => v,
            _ => first,
        }
    }
}

/// How a trace's values become requests/s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// A `timestamp,value` CSV file readable by the load simulator.
    pub path: PathBuf,
    /// Requests/s per unit of value (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Alternatively: scale so that the trace's largest value is this many requests/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rps: Option<f64>,
}

/// The body of `PUT /load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    pub namespace: String,
    pub deployment: String,
    #[serde(default)]
    pub rps: Option<f64>,
    #[serde(default)]
    pub trace: Option<TraceSpec>,
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// Trace/pattern seconds played per real second (default 1).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// The Ingress whose request counters carry this load (default: found through the Deployment's Service).
    #[serde(default)]
    pub ingress: Option<String>,
}

/// Where a target's request rate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadSource {
    Constant(f64),
    Trace {
        spec: TraceSpec,
        rps_per_value: f64,
        trace: Arc<Trace>,
    },
    Pattern(Pattern),
}

/// One target's configured load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadEntry {
    pub source: LoadSource,
    pub time_scale: f64,
    pub ingress: Option<String>,
    /// Unix seconds when this load was set: time zero of its trace or pattern.
    pub started_at: f64,
}

impl LoadEntry {
    /// Validates a request (reading its trace file, if any) into an entry starting at `now`.
    pub fn from_request(
        request: &LoadRequest,
        now: f64,
    ) -> Result<(DeploymentId, Self), LoadError> {
        if request.namespace.is_empty() || request.deployment.is_empty() {
            return Err(LoadError::MissingTarget);
        }
        let source = match (request.rps, &request.trace, &request.pattern) {
            (Some(rps), None, None) => LoadSource::Constant(check("rps", rps, 0.0, ">= 0")?),
            (None, Some(spec), None) => {
                let trace = Trace::load(&spec.path)?;
                let rps_per_value = match (spec.scale, spec.peak_rps) {
                    (Some(_), Some(_)) => return Err(LoadError::AmbiguousTraceScale),
                    (Some(scale), None) => check("scale", scale, 0.0, ">= 0")?,
                    (None, Some(peak)) => {
                        let peak = check("peak_rps", peak, 0.0, ">= 0")?;
                        let max = trace.max_value();
                        if max > 0.0 { peak / max } else { 0.0 }
                    }
                    (None, None) => 1.0,
                };
                LoadSource::Trace {
                    spec: spec.clone(),
                    rps_per_value,
                    trace: Arc::new(trace),
                }
            }
            (None, None, Some(pattern)) => {
                pattern.validate()?;
                LoadSource::Pattern(pattern.clone())
            }
            _ => return Err(LoadError::AmbiguousSource),
        };
        let time_scale = check_positive("time_scale", request.time_scale.unwrap_or(1.0))?;
        let id = DeploymentId {
            namespace: request.namespace.clone(),
            deployment: request.deployment.clone(),
        };
        let entry = Self {
            source,
            time_scale,
            ingress: request.ingress.clone().filter(|i| !i.is_empty()),
            started_at: now,
        };
        Ok((id, entry))
    }

    /// Requests/s at Unix time `now`.
    pub fn rps_at(&self, now: f64) -> f64 {
        let t = (now - self.started_at).max(0.0) * self.time_scale;
        match &self.source {
            LoadSource::Constant(rps) => *rps,
            LoadSource::Trace {
                rps_per_value,
                trace,
                ..
            } => (trace.value_at(t) * rps_per_value).max(0.0),
            LoadSource::Pattern(pattern) => pattern.rps_at(t),
        }
    }
}

/// How a load source is shown by `GET /load`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceView {
    Constant {
        rps: f64,
    },
    Trace {
        #[serde(flatten)]
        spec: TraceSpec,
        rps_per_value: f64,
        points: usize,
        duration_seconds: f64,
    },
    Pattern {
        pattern: Pattern,
    },
}

impl From<&LoadSource> for SourceView {
    fn from(source: &LoadSource) -> Self {
        match source {
            LoadSource::Constant(rps) => Self::Constant { rps: *rps },
            LoadSource::Trace {
                spec,
                rps_per_value,
                trace,
            } => Self::Trace {
                spec: spec.clone(),
                rps_per_value: *rps_per_value,
                points: trace.len(),
                duration_seconds: trace.duration_seconds(),
            },
            LoadSource::Pattern(pattern) => Self::Pattern {
                pattern: pattern.clone(),
            },
        }
    }
}

/// The configured load of every target.
pub type LoadTable = BTreeMap<DeploymentId, LoadEntry>;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> LoadRequest {
        let parsed = serde_json::from_str(json);
        assert!(parsed.is_ok(), "bad test request {json}: {parsed:?}");
        parsed.unwrap_or_else(|_| LoadRequest {
            namespace: String::new(),
            deployment: String::new(),
            rps: None,
            trace: None,
            pattern: None,
            time_scale: None,
            ingress: None,
        })
    }

    #[test]
    fn trace_parses_civil_and_unix_timestamps_and_interpolates() -> Result<(), LoadError> {
        let civil =
            Trace::parse_csv("timestamp,value\n2014-07-01 00:00:00,10\n2014-07-01 00:30:00,40\n")?;
        assert_eq!(civil.duration_seconds(), 1800.0);
        assert_eq!(civil.value_at(0.0), 10.0);
        assert_eq!(civil.value_at(900.0), 25.0);
        // Loops past the end.
        assert_eq!(civil.value_at(1800.0 + 900.0), 25.0);
        let unix = Trace::parse_csv("t,v\n100,1\n\n160,2\n220,5\n")?;
        assert_eq!(unix.len(), 3);
        assert_eq!(unix.value_at(90.0), 3.5);
        assert_eq!(unix.max_value(), 5.0);
        Ok(())
    }

    #[test]
    fn trace_uses_the_simulator_cleaning() -> Result<(), LoadError> {
        // Unparsable rows are skipped, rows are sorted, duplicate timestamps averaged.
        let trace = Trace::parse_csv("t,v\n1,x\n30,4\n0,2\n30,6\n")?;
        assert_eq!(trace.len(), 2);
        assert_eq!(trace.value_at(0.0), 2.0);
        assert_eq!(trace.value_at(15.0), 3.5);
        assert!(matches!(
            Trace::parse_csv("t,v\n1,2\n"),
            Err(LoadError::Trace(TraceError::TooShort { .. }))
        ));
        assert!(matches!(
            Trace::load(Path::new("/nonexistent/trace.csv")),
            Err(LoadError::Trace(TraceError::Io { .. }))
        ));
        Ok(())
    }

    #[test]
    fn patterns_follow_their_shape_with_time_compression() -> Result<(), LoadError> {
        let (_, entry) = LoadEntry::from_request(
            &request(
                r#"{"namespace":"a","deployment":"b","time_scale":10,
                    "pattern":{"kind":"square","low_rps":1,"high_rps":9,"period_seconds":100}}"#,
            ),
            1000.0,
        )?;
        assert_eq!(entry.rps_at(1000.0), 1.0);
        // 6 real seconds = 60 pattern seconds: second half of the period.
        assert_eq!(entry.rps_at(1006.0), 9.0);
        let sine = Pattern::Sine {
            base_rps: 10.0,
            amplitude_rps: 20.0,
            period_seconds: 4.0,
        };
        assert!((sine.rps_at(1.0) - 30.0).abs() < 1e-9);
        assert_eq!(sine.rps_at(3.0), 0.0, "clamped at zero");
        let ramp = Pattern::Ramp {
            from_rps: 0.0,
            to_rps: 10.0,
            duration_seconds: 10.0,
        };
        assert_eq!(ramp.rps_at(5.0), 5.0);
        assert_eq!(ramp.rps_at(50.0), 10.0);
        let spike = Pattern::Spike {
            base_rps: 1.0,
            spike_rps: 50.0,
            period_seconds: 60.0,
            spike_seconds: 5.0,
        };
        assert_eq!(spike.rps_at(62.0), 50.0);
        assert_eq!(spike.rps_at(30.0), 1.0);
        Ok(())
    }

    #[test]
    fn requests_need_exactly_one_valid_source() {
        let both = request(
            r#"{"namespace":"a","deployment":"b","rps":1,"pattern":{"kind":"ramp","from_rps":0,"to_rps":1,"duration_seconds":1}}"#,
        );
        assert!(matches!(
            LoadEntry::from_request(&both, 0.0),
            Err(LoadError::AmbiguousSource)
        ));
        let none = request(r#"{"namespace":"a","deployment":"b"}"#);
        assert!(matches!(
            LoadEntry::from_request(&none, 0.0),
            Err(LoadError::AmbiguousSource)
        ));
        let negative = request(r#"{"namespace":"a","deployment":"b","rps":-1}"#);
        assert!(matches!(
            LoadEntry::from_request(&negative, 0.0),
            Err(LoadError::OutOfRange { field: "rps", .. })
        ));
        let zero_period = request(
            r#"{"namespace":"a","deployment":"b","pattern":{"kind":"sine","base_rps":1,"amplitude_rps":1,"period_seconds":0}}"#,
        );
        assert!(LoadEntry::from_request(&zero_period, 0.0).is_err());
        let no_name = request(r#"{"namespace":"","deployment":"b","rps":1}"#);
        assert!(matches!(
            LoadEntry::from_request(&no_name, 0.0),
            Err(LoadError::MissingTarget)
        ));
        assert!(
            serde_json::from_str::<LoadRequest>(r#"{"namespace":"a","deployment":"b","rsp":1}"#)
                .is_err()
        );
    }

    #[test]
    fn trace_requests_scale_to_peak() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ipa-loadsim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("trace.csv");
        std::fs::write(&path, "timestamp,value\n0,100\n60,400\n")?;
        let req = LoadRequest {
            namespace: "a".into(),
            deployment: "b".into(),
            rps: None,
            trace: Some(TraceSpec {
                path: path.clone(),
                scale: None,
                peak_rps: Some(40.0),
            }),
            pattern: None,
            time_scale: Some(60.0),
            ingress: Some("web".into()),
        };
        let (id, entry) = LoadEntry::from_request(&req, 0.0)?;
        assert_eq!(id.deployment, "b");
        assert_eq!(entry.ingress.as_deref(), Some("web"));
        assert_eq!(entry.rps_at(0.0), 10.0);
        // 0.5 real s × 60 = 30 trace s: halfway between 100 and 400 → 250 → 25 rps.
        assert!((entry.rps_at(0.5) - 25.0).abs() < 1e-9);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
