//! The daily profile: what the demand did yesterday over the next horizon (a seasonal-naive ratio), the built-in
//! advisor's pre-scale. Today's ramps are the fast rule's (a 30 s lead, `horizontal.rs`); the window-trend
//! forecast that stood here over-provisioned at a 15 s loop and is gone.

const DAY_SECONDS: u32 = 86_400;

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
        fn daily_ratio_is_bounded(
            values in prop::collection::vec(prop::option::of(0.0f64..1e6), 0..400),
            step in 0u32..900, horizon in 0u32..7200,
        ) {
            if let Some(r) = seasonal_ratio(&values, step, horizon) {
                prop_assert!((0.5..=3.0).contains(&r));
            }
        }
    }
}
