//! Kubernetes VPA (recommender + updater in Recreate mode) with its defaults: a CPU histogram with 5 %
//! exponential buckets and a 24 h decay half-life, each sample weighted by the CPU request; memory from the
//! peaks of 24 h intervals (8 kept) with the OOM bump max(+20 %, +100 MB); target p90, lower bound p50,
//! upper bound p95, all × 1.15 and widened by the confidence multipliers; minimums 25m CPU and 250 MiB. The
//! updater runs every minute and replaces pods whose requests are outside [lower, upper] (or, for pods older
//! than 12 h, differ from the target by ≥ 10 %), never when fewer than 2 replicas run. Limits keep the
//! template's limit/request ratio (`controlledValues: RequestsAndLimits`). Replicas are fixed.
//!
//! Update mode `InPlaceOrRecreate` (Kubernetes ≥ 1.33): pods are resized in place where the cluster allows it
//! (`ClusterConfig::in_place_resize`). Where it does not, one simplification in VPA's favour: an eviction is
//! modelled as the same rolling update (25 % surge) every template change gets, where a real Recreate eviction
//! loses the pod's capacity while its replacement starts.

use ipa_core::{Bytes, CpuMillis};

use crate::cluster::{Action, PodTemplate};
use crate::policy::{Autoscaler, Observation, SimSettings};

const HALF_LIFE_SECONDS: f64 = 24.0 * 3600.0;
const MARGIN: f64 = 1.15;
const MIN_CPU_CORES: f64 = 0.025;
const MIN_MEMORY_BYTES: f64 = 250.0 * 1024.0 * 1024.0;
const MEMORY_INTERVAL_SECONDS: i64 = 24 * 3600;
const MEMORY_INTERVALS: usize = 8;
const OOM_MIN_BUMP_BYTES: f64 = 100.0 * 1024.0 * 1024.0;
const OOM_BUMP_RATIO: f64 = 1.2;
const LOOP_SECONDS: i64 = 60;

/// VPA's decaying exponential histogram.
#[derive(Debug, Clone)]
pub struct DecayingHistogram {
    first_bucket: f64,
    ratio: f64,
    weights: Vec<f64>,
    total: f64,
    reference_time: f64,
}

impl DecayingHistogram {
    pub fn new(first_bucket: f64) -> Self {
        Self {
            first_bucket,
            ratio: 1.05,
            weights: Vec::new(),
            total: 0.0,
            reference_time: 0.0,
        }
    }

    fn bucket(&self, value: f64) -> usize {
        if value < self.first_bucket {
            return 0;
        }
        ((1.0 + value * (self.ratio - 1.0) / self.first_bucket).ln() / self.ratio.ln()).floor()
            as usize
    }

    fn bucket_start(&self, bucket: usize) -> f64 {
        self.first_bucket * (self.ratio.powi(bucket as i32) - 1.0) / (self.ratio - 1.0)
    }

    /// Adds `value` with `weight` at time `t` (seconds); newer samples weigh 2^(Δt / half-life) more.
    pub fn add(&mut self, value: f64, weight: f64, t: f64) {
        if !(value.is_finite() && weight.is_finite() && weight > 0.0) {
            return;
        }
        if self.total == 0.0 {
            self.reference_time = t;
        }
        let mut factor = 2f64.powf((t - self.reference_time) / HALF_LIFE_SECONDS);
        if factor > 1e100 {
            // Shift the reference time so the weights stay finite (VPA does the same).
            for w in &mut self.weights {
                *w /= factor;
            }
            self.total /= factor;
            self.reference_time = t;
            factor = 1.0;
        }
        let b = self.bucket(value.max(0.0)).min(100_000);
        if self.weights.len() <= b {
            self.weights.resize(b + 1, 0.0);
        }
        self.weights[b] += weight * factor;
        self.total += weight * factor;
    }

    /// The end of the bucket holding the `q` quantile of the weight (VPA returns the bucket's upper edge).
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let threshold = q * self.total;
        let mut sum = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            sum += w;
            if sum >= threshold && *w > 0.0 {
                return Some(self.bucket_start(i + 1));
            }
        }
        self.weights
            .len()
            .checked_sub(1)
            .map(|i| self.bucket_start(i + 1))
    }
}

#[derive(Debug, Clone)]
pub struct Vpa {
    cpu: DecayingHistogram,
    /// (interval start, peak per-pod working set) for the last MEMORY_INTERVALS intervals.
    memory_peaks: Vec<(i64, f64)>,
    first_sample: Option<i64>,
    last_loop: Option<i64>,
    last_oom_total: u64,
    cpu_limit_ratio: Option<f64>,
    memory_limit_ratio: Option<f64>,
    /// The cluster's largest pod (`ClusterConfig::max_pod_cpu`), in cores.
    max_pod_cpu_cores: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    lower: f64,
    target: f64,
    upper: f64,
}

impl Vpa {
    pub fn new(settings: &SimSettings) -> Self {
        let t = settings.initial_template;
        let ratio =
            |limit: Option<f64>, request: f64| limit.filter(|_| request > 0.0).map(|l| l / request);
        Self {
            max_pod_cpu_cores: settings.cluster.max_pod_cpu.as_cores(),
            cpu: DecayingHistogram::new(0.001),
            memory_peaks: Vec::new(),
            first_sample: None,
            last_loop: None,
            last_oom_total: 0,
            cpu_limit_ratio: ratio(
                t.cpu_limit.map(CpuMillis::as_cores),
                t.cpu_request.as_cores(),
            ),
            memory_limit_ratio: ratio(t.memory_limit.map(Bytes::as_f64), t.memory_request.as_f64()),
        }
    }

    fn record_memory_peak(&mut self, now: i64, value: f64) {
        let start = now - now.rem_euclid(MEMORY_INTERVAL_SECONDS);
        match self.memory_peaks.last_mut() {
            Some(last) if last.0 == start => last.1 = last.1.max(value),
            _ => self.memory_peaks.push((start, value)),
        }
        if self.memory_peaks.len() > MEMORY_INTERVALS {
            self.memory_peaks.remove(0);
        }
    }

    fn days_of_history(&self, now: i64) -> f64 {
        self.first_sample
            .map_or(0.0, |first| (now - first) as f64 / 86_400.0)
    }

    fn bounds(&self, p50: f64, p90: f64, p95: f64, days: f64, min: f64) -> Bounds {
        let upper_factor = if days > 0.0 {
            1.0 + 1.0 / days
        } else {
            f64::INFINITY
        };
        let lower_factor = if days > 0.0 {
            (1.0 + 0.001 / days).powi(-2)
        } else {
            0.0
        };
        Bounds {
            lower: (p50 * MARGIN * lower_factor).max(min),
            target: (p90 * MARGIN).max(min),
            upper: (p95 * MARGIN * upper_factor).max(min),
        }
    }

    fn memory_bounds(&self, days: f64) -> Option<Bounds> {
        let mut h = DecayingHistogram::new(10_000_000.0);
        for &(t, peak) in &self.memory_peaks {
            h.add(peak, 1.0, t as f64);
        }
        Some(self.bounds(
            h.percentile(0.5)?,
            h.percentile(0.9)?,
            h.percentile(0.95)?,
            days,
            MIN_MEMORY_BYTES,
        ))
    }

    fn cpu_bounds(&self, days: f64) -> Option<Bounds> {
        Some(self.bounds(
            self.cpu.percentile(0.5)?,
            self.cpu.percentile(0.9)?,
            self.cpu.percentile(0.95)?,
            days,
            MIN_CPU_CORES,
        ))
    }
}

impl Autoscaler for Vpa {
    fn name(&self) -> &str {
        "vpa"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Action {
        let now = obs.now;
        // Recommender input: every ready pod's usage (metrics-server samples), every step.
        let mut peak_memory: Option<f64> = None;
        for pod in obs.outcome.pods.iter().filter(|p| p.ready) {
            let weight = pod.template.cpu_request.as_cores().max(0.1);
            self.cpu.add(pod.cpu_cores, weight, now as f64);
            peak_memory =
                Some(peak_memory.map_or(pod.memory_bytes, |m: f64| m.max(pod.memory_bytes)));
        }
        if let Some(peak) = peak_memory {
            self.first_sample.get_or_insert(now);
            self.record_memory_peak(now, peak);
        }
        if obs.oom_kills_total > self.last_oom_total {
            // RecordOOM: an artificial peak of max(used + 100 MB, used × 1.2), used = max(request, peak).
            let used = obs
                .template
                .memory_request
                .as_f64()
                .max(peak_memory.unwrap_or(0.0))
                .max(self.memory_peaks.last().map_or(0.0, |p| p.1));
            self.record_memory_peak(now, (used + OOM_MIN_BUMP_BYTES).max(used * OOM_BUMP_RATIO));
            self.last_oom_total = obs.oom_kills_total;
        }
        if self.last_loop.is_some_and(|last| now - last < LOOP_SECONDS) {
            return Action::default();
        }
        self.last_loop = Some(now);
        if obs.replicas < 2 || obs.rollout_in_progress {
            return Action::default();
        }
        let days = self.days_of_history(now);
        let (Some(cpu), Some(memory)) = (self.cpu_bounds(days), self.memory_bounds(days)) else {
            return Action::default();
        };
        let current = obs.template;
        let cpu_request = current.cpu_request.as_cores();
        let memory_request = current.memory_request.as_f64();
        let outside = |value: f64, b: &Bounds| value < b.lower || value > b.upper;
        let oldest_age = obs
            .outcome
            .pods
            .iter()
            .map(|p| p.age_seconds)
            .fold(0.0, f64::max);
        let differs =
            |value: f64, target: f64| value > 0.0 && ((target - value) / value).abs() >= 0.1;
        let evict = outside(cpu_request, &cpu)
            || outside(memory_request, &memory)
            || (oldest_age > 12.0 * 3600.0
                && (differs(cpu_request, cpu.target) || differs(memory_request, memory.target)));
        if !evict {
            return Action::default();
        }
        let cpu_target = cpu.target.min(self.max_pod_cpu_cores);
        let template = PodTemplate {
            cpu_request: CpuMillis::from_cores_f64(cpu_target),
            cpu_limit: self
                .cpu_limit_ratio
                .map(|r| CpuMillis::from_cores_f64(cpu_target * r)),
            memory_request: Bytes::from_f64(memory.target),
            memory_limit: self
                .memory_limit_ratio
                .map(|r| Bytes::from_f64(memory.target * r)),
        };
        if template == current {
            return Action::default();
        }
        // `InPlaceOrRecreate`: resized in place where the cluster allows it, by eviction otherwise.
        Action {
            template: Some(template),
            in_place: true,
            ..Action::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_bucket_upper_edges() {
        let mut h = DecayingHistogram::new(0.001);
        for i in 1..=100 {
            h.add(f64::from(i) / 100.0, 1.0, 0.0);
        }
        let p90 = h.percentile(0.9).unwrap_or(0.0);
        assert!((0.9..0.9 * 1.06).contains(&p90), "p90 {p90}");
        assert!(h.percentile(0.5).unwrap_or(0.0) <= p90);
    }

    #[test]
    fn newer_samples_weigh_more() {
        let mut h = DecayingHistogram::new(0.001);
        h.add(1.0, 1.0, 0.0);
        h.add(2.0, 1.0, 2.0 * HALF_LIFE_SECONDS);
        // The newer sample has 4× the weight: the median is the newer value.
        let p50 = h.percentile(0.5).unwrap_or(0.0);
        assert!(p50 > 1.9, "p50 {p50}");
    }

    #[test]
    fn empty_histogram_has_no_percentile() {
        assert_eq!(DecayingHistogram::new(0.001).percentile(0.9), None);
    }
}
