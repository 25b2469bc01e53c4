//! Demand forecasting over a short horizon (pod start-up + one interval).
//!
//! Deliberately simple and explainable: a level (the latest value), plus the window's upward trend over the
//! horizon when it stands out of the window's noise, plus — when the history covers a day —
//! the change the same time yesterday saw over the same horizon (a seasonal-naive ratio). The forecast takes the
//! largest of these, so it only ever adds caution; the guardrails' stabilization handles the way down.

use crate::snapshot::SeriesStats;

const DAY_SECONDS: u32 = 86_400;
/// Minutes over which a trend must rise above the window's spread to count.
const TREND_EVIDENCE_MINUTES: f64 = 5.0;

/// What a forecast was made of, so the recommender can explain it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Expected peak demand over the horizon, in the series' unit.
    pub value: f64,
    /// Recent level the forecast starts from.
    pub level: f64,
    /// Contribution of the window's trend.
    pub trend: f64,
    /// Yesterday's ratio (value at t+h / value at t, one day ago), when history allows.
    pub daily_ratio: Option<f64>,
}

/// Forecasts the peak of a series over `horizon_seconds` from its window statistics and optional history
/// (oldest first, regularly stepped by `step_seconds`, `None` for gaps).
pub fn forecast_peak(
    stats: &SeriesStats,
    history: Option<(&[Option<f64>], u32)>,
    horizon_seconds: u32,
) -> Forecast {
    let level = stats.current.max(0.0);
    let horizon_minutes = f64::from(horizon_seconds) / 60.0;
    // A rise smaller than the window's own spread (p90 − p50) is noise, not a trend.
    let significant =
        stats.trend_per_min * TREND_EVIDENCE_MINUTES > (stats.p90 - stats.p50).max(0.0);
    let trend = if stats.trend_per_min.is_finite() && significant && stats.samples >= 3 {
        // Capped at doubling the level: a short window's slope extrapolates badly.
        (stats.trend_per_min * horizon_minutes).min(level.max(f64::EPSILON))
    } else {
        0.0
    };
    let daily_ratio =
        history.and_then(|(values, step)| seasonal_ratio(values, step, horizon_seconds));
    let seasonal = daily_ratio.map_or(0.0, |r| level * r);
    Forecast {
        value: (level + trend).max(seasonal),
        level,
        trend,
        daily_ratio,
    }
}

/// Ratio between demand over `(t − 1 day, t − 1 day + horizon]` and demand at `t − 1 day`, from a history that
/// ends at `t`. Both sides are means over a few steps, so one noisy sample cannot pose as a daily pattern.
/// `None` when the history is shorter than a day plus the horizon or has gaps there. Clamped to [0.5, 3].
pub fn seasonal_ratio(
    values: &[Option<f64>],
    step_seconds: u32,
    horizon_seconds: u32,
) -> Option<f64> {
    if step_seconds == 0 {
        return None;
    }
    let day = (DAY_SECONDS / step_seconds) as usize;
    let ahead = (horizon_seconds.div_ceil(step_seconds) as usize).max(SMOOTHING_STEPS);
    let n = values.len();
    if n < day + SMOOTHING_STEPS || ahead >= day {
        return None;
    }
    let then = n - 1 - day;
    let mean = |slice: &[Option<f64>]| {
        let clean = slice
            .iter()
            .map(|v| v.filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()?;
        Some(clean.iter().sum::<f64>() / clean.len().max(1) as f64)
    };
    let base = mean(&values[then + 1 - SMOOTHING_STEPS..=then]).filter(|b| *b > 0.0)?;
    let future = mean(&values[then + 1..=then + ahead])?;
    Some((future / base).clamp(0.5, 3.0))
}

/// Steps averaged on each side of the seasonal ratio.
const SMOOTHING_STEPS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(current: f64, p90: f64, trend: f64) -> SeriesStats {
        SeriesStats {
            current,
            mean: current,
            p50: current,
            p90,
            p95: p90,
            max: p90,
            trend_per_min: trend,
            recent_trend_per_min: 0.0,
            samples: 20,
        }
    }

    #[test]
    fn flat_series_forecasts_its_level() {
        let f = forecast_peak(&stats(10.0, 12.0, 0.0), None, 90);
        assert_eq!(f.value, 10.0);
        assert_eq!(f.trend, 0.0);
    }

    #[test]
    fn rising_series_adds_the_trend_over_the_horizon() {
        let f = forecast_peak(&stats(10.0, 10.0, 2.0), None, 90);
        assert!((f.value - 13.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn falling_trend_never_lowers_the_forecast() {
        let f = forecast_peak(&stats(10.0, 10.0, -5.0), None, 90);
        assert_eq!(f.value, 10.0);
    }

    #[test]
    fn yesterday_morning_ramp_is_expected_again() {
        // 5-minute steps; one day ago demand doubled over the next 15 minutes.
        let mut history = vec![Some(10.0); 288 + 3];
        let then = history.len() - 1 - 288;
        for step in 1..=3 {
            history[then + step] = Some(20.0);
        }
        let ratio = seasonal_ratio(&history, 300, 600);
        assert_eq!(ratio, Some(2.0));
        let f = forecast_peak(&stats(10.0, 10.0, 0.0), Some((&history, 300)), 600);
        assert_eq!(f.value, 20.0);
    }

    #[test]
    fn short_or_gappy_history_gives_no_daily_ratio() {
        assert_eq!(seasonal_ratio(&[Some(1.0); 100], 300, 600), None);
        let mut history = vec![Some(10.0); 291];
        history[3] = None;
        assert_eq!(seasonal_ratio(&history, 300, 600), None);
        assert_eq!(seasonal_ratio(&history, 0, 600), None);
    }

    proptest! {
        #[test]
        fn forecast_is_finite_and_at_least_the_level(
            current in 0.0f64..1e6, p90 in 0.0f64..1e6, trend in -1e6f64..1e6, horizon in 0u32..7200,
        ) {
            let f = forecast_peak(&stats(current, p90, trend), None, horizon);
            prop_assert!(f.value.is_finite());
            prop_assert!(f.value >= f.level);
            prop_assert!(f.value <= 2.0 * f.level.max(f64::EPSILON) + 1e-9);
        }
    }
}
