//! The controller's decoding of Prometheus answers (`/api/v1/query` and `/api/v1/query_range` JSON → samples and
//! series), and the window statistics made of them. Only finite values come out, and the statistics of any
//! series are finite.
#![no_main]

use ipa_controller::read::prometheus::{parse_matrix, parse_vector};
use ipa_core::stats::summarize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = parse_vector(data) {
        assert!(samples.iter().all(|s| s.value.is_finite()));
    }
    if let Ok(series) = parse_matrix(data) {
        for s in &series {
            assert!(s.points.iter().all(|(t, v)| t.is_finite() && v.is_finite()));
            let values: Vec<f64> = s.points.iter().map(|(_, v)| *v).collect();
            if let Some(stats) = summarize(&values, 15.0) {
                let all = [
                    stats.current,
                    stats.mean,
                    stats.max,
                    stats.p50,
                    stats.p90,
                    stats.p95,
                ];
                assert!(all.iter().all(|v| v.is_finite()), "{stats:?} of {values:?}");
            }
        }
    }
});
