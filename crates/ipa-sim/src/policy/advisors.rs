//! Advisors other than the built-in one, to measure what a bad or recorded advisor can do to IPA's decisions
//! (`ipa bench --advisor ...`): each runs through the same `ipa_core::decide` as a model's advice would.

use ipa_core::{
    Bytes, ContainerRecommendation, CpuMillis, MetricsSnapshot, Recommendation, ResolvedPolicy,
    Resources, Source,
};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use crate::policy::ipa::{Advisor, CONTAINER};

/// The worst advisor we can think of that still answers: uniformly random replicas (1…1,000) and requests and
/// limits (1m…1,000 cores, 1Mi…1Ti), from a fixed seed so every run is the same.
#[derive(Debug, Clone)]
pub struct RandomAdvisor {
    rng: XorShiftRng,
}

impl RandomAdvisor {
    pub const SEED: u64 = 0x1DA_5EED_u64;

    pub fn new(seed: u64) -> Self {
        Self {
            rng: XorShiftRng::seed_from_u64(seed),
        }
    }

    fn resources(&mut self) -> Resources {
        Resources {
            cpu: Some(CpuMillis(self.rng.random_range(1..=1_000_000))),
            memory: Some(Bytes(self.rng.random_range(1u64 << 20..=1u64 << 40))),
        }
    }
}

impl Advisor for RandomAdvisor {
    fn name(&self) -> &str {
        "random"
    }

    fn advise(
        &mut self,
        _snapshot: &MetricsSnapshot,
        _policy: &ResolvedPolicy,
    ) -> Result<Option<Recommendation>, String> {
        let mut rec = Recommendation::new(self.rng.random_range(1..=1000), Source::Llm);
        rec.containers.push(ContainerRecommendation {
            name: CONTAINER.to_string(),
            requests: self.resources(),
            limits: self.resources(),
        });
        rec.rationale = "random".to_string();
        Ok(Some(rec))
    }
}

/// Replays recorded recommendations (an agent's decision log) in order, one per advisory cycle, from the start
/// again when they run out. Each is held by `decide` against the simulated metrics, as it was in the cluster.
#[derive(Debug, Clone)]
pub struct ReplayAdvisor {
    recorded: Vec<Recommendation>,
    next: usize,
}

impl ReplayAdvisor {
    /// `None` for an empty log: there is nothing to replay.
    pub fn new(recorded: Vec<Recommendation>) -> Option<Self> {
        (!recorded.is_empty()).then_some(Self { recorded, next: 0 })
    }
}

impl Advisor for ReplayAdvisor {
    fn name(&self) -> &str {
        "replay"
    }

    fn advise(
        &mut self,
        _snapshot: &MetricsSnapshot,
        _policy: &ResolvedPolicy,
    ) -> Result<Option<Recommendation>, String> {
        let rec = self
            .recorded
            .get(self.next % self.recorded.len().max(1))
            .cloned();
        self.next = self.next.wrapping_add(1);
        rec.map(|mut r| {
            // A recorded answer names the recorded app's containers: its first one stands for ours.
            if let Some(first) = r.containers.first_mut() {
                first.name = CONTAINER.to_string();
            }
            Some(r)
        })
        .ok_or_else(|| "empty decision log".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_reproducible_and_in_range() {
        let policy = ipa_core::Policy::default().resolve();
        let s = MetricsSnapshot::new(
            ipa_core::TargetRef {
                namespace: "n".into(),
                deployment: "d".into(),
            },
            0,
            1,
        );
        let mut a = RandomAdvisor::new(7);
        let mut b = RandomAdvisor::new(7);
        for _ in 0..100 {
            let (x, y) = (a.advise(&s, &policy), b.advise(&s, &policy));
            assert_eq!(x, y);
            let r = x
                .ok()
                .flatten()
                .unwrap_or_else(|| Recommendation::new(0, Source::Llm));
            assert!((1..=1000).contains(&r.replicas));
        }
    }
}
