//! Window statistics over samples: what the collector and the simulator use to fill a `MetricsSnapshot`.

use crate::snapshot::SeriesStats;

/// Percentile by linear interpolation between closest ranks; `q` in [0, 1]. `sorted` must be ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = if q.is_finite() {
        q.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let rank = q * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    // Weighted so that no intermediate overflows: `lo + (hi - lo) * frac` is infinite for -1e308 and 1e308.
    let (a, b) = (sorted[lo], sorted[hi]);
    Some((a * (1.0 - frac) + b * frac).clamp(a.min(b), a.max(b)))
}

/// Least-squares slope of `values` sampled every `step_seconds`, in units per minute.
pub fn slope_per_minute(values: &[f64], step_seconds: f64) -> f64 {
    let n = values.len();
    if n < 2 || step_seconds.is_nan() || step_seconds <= 0.0 {
        return 0.0;
    }
    let mean_x = (n - 1) as f64 / 2.0;
    let mean_y = values.iter().sum::<f64>() / n as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    let slope = if den == 0.0 {
        0.0
    } else {
        num / den * 60.0 / step_seconds
    };
    // Samples near f64::MAX overflow the sums; such a series has no trend worth extrapolating.
    if slope.is_finite() { slope } else { 0.0 }
}

/// The span of a series' `recent_trend_per_min`: two 15 s steps, the shortest slope that is not a single jump.
pub const RECENT_SECONDS: f64 = 30.0;

/// Summarizes samples taken every `step_seconds`, oldest first. Non-finite samples are dropped (they are
/// missing data, not zeros); `None` when nothing finite is left.
pub fn summarize(samples: &[f64], step_seconds: f64) -> Option<SeriesStats> {
    let clean: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    let current = *clean.last()?;
    let mut sorted = clean.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q| percentile_sorted(&sorted, q).unwrap_or(current);
    let lowest = sorted.first().copied().unwrap_or(current);
    let highest = sorted.last().copied().unwrap_or(current);
    // Each sample divided first, and the result held between the extremes: summing first overflowed to an
    // infinite mean for samples near f64::MAX (found by the `prometheus` fuzz target).
    let n = clean.len() as f64;
    let mean = clean.iter().map(|v| v / n).sum::<f64>();
    Some(SeriesStats {
        current,
        mean: if mean.is_finite() {
            mean.clamp(lowest, highest)
        } else {
            current
        },
        p50: pct(0.5),
        p90: pct(0.9),
        p95: pct(0.95),
        max: sorted.last().copied().unwrap_or(current),
        trend_per_min: slope_per_minute(&clean, step_seconds),
        recent_trend_per_min: slope_per_minute(recent(&clean, step_seconds), step_seconds),
        samples: clean.len().min(u32::MAX as usize) as u32,
    })
}

/// The tail of `values` that covers the last [`RECENT_SECONDS`] (at least two samples).
fn recent(values: &[f64], step_seconds: f64) -> &[f64] {
    let steps = if step_seconds.is_finite() && step_seconds > 0.0 {
        (RECENT_SECONDS / step_seconds).round().max(1.0) as usize
    } else {
        1
    };
    &values[values.len().saturating_sub(steps + 1)..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `prometheus` fuzz target: a Prometheus answer with samples near f64::MAX gave an infinite
    /// mean and NaN trends.
    #[test]
    fn huge_samples_give_finite_statistics() {
        for samples in [
            vec![0.25, 1e308, f64::MAX],
            vec![-f64::MAX, f64::MAX, -f64::MAX],
            vec![f64::MAX; 40],
        ] {
            let s = summarize(&samples, 15.0).unwrap_or_default();
            let all = [
                s.current,
                s.mean,
                s.p50,
                s.p90,
                s.p95,
                s.max,
                s.trend_per_min,
                s.recent_trend_per_min,
            ];
            assert!(all.iter().all(|v| v.is_finite()), "{s:?} of {samples:?}");
            assert!(s.mean >= -f64::MAX && s.mean <= s.max);
        }
    }

    #[test]
    fn summarizes_a_ramp() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 5.0], 60.0).unwrap_or_default();
        assert_eq!(s.current, 5.0);
        assert_eq!(s.mean, 3.0);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.max, 5.0);
        assert!((s.trend_per_min - 1.0).abs() < 1e-9);
        assert!((s.recent_trend_per_min - 1.0).abs() < 1e-9);
        assert_eq!(s.samples, 5);
    }

    #[test]
    fn recent_trend_sees_a_ramp_that_the_window_trend_smooths() {
        let mut values = vec![10.0; 18];
        values.extend([10.0, 15.0, 20.0]);
        let s = summarize(&values, 15.0).unwrap_or_default();
        assert!((s.recent_trend_per_min - 20.0).abs() < 1e-9, "{s:?}");
        assert!(s.trend_per_min < 2.0);
    }

    #[test]
    fn empty_or_nan_is_missing_not_zero() {
        assert!(summarize(&[], 15.0).is_none());
        assert!(summarize(&[f64::NAN, f64::INFINITY], 15.0).is_none());
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered(values in prop::collection::vec(-1e9f64..1e9, 1..200)) {
            let s = summarize(&values, 15.0).unwrap_or_default();
            prop_assert!(s.p50 <= s.p90 + 1e-6 && s.p90 <= s.p95 + 1e-6 && s.p95 <= s.max + 1e-6);
            prop_assert!(s.mean <= s.max + 1e-6);
        }
    }
}
