//! The guard state the seed's protocol needs and does not carry: the seed's Go controller applies whatever
//! `/askllm` answers and keeps no state, so without this the agent's answers had no stabilization, no step
//! limits and no advisor hold (at constant load the seed flipped replicas 4 times in 4 minutes). The agent keeps
//! one `GuardState` per target and runs every seed answer through `ipa_core::decide`, as the controller does.
//!
//! Bounded: at most [`MAX_TARGETS`] targets, each forgotten after [`IDLE_SECONDS`] without a request; the oldest
//! goes first when full.

use std::collections::HashMap;
use std::sync::Mutex;

use ipa_core::{Advice, Decision, GuardState, MetricsSnapshot, ResolvedPolicy, TargetRef};

/// Most targets remembered at once.
pub const MAX_TARGETS: usize = 4096;
/// A target not asked about for this long is forgotten (its windows have long expired anyway).
pub const IDLE_SECONDS: i64 = 3600;

#[derive(Debug, Default)]
pub struct GuardStore {
    targets: Mutex<HashMap<TargetRef, (GuardState, i64)>>,
}

impl GuardStore {
    /// `ipa_core::decide` for `snapshot` with the target's remembered state, which the decision then replaces.
    pub fn decide(
        &self,
        snapshot: &MetricsSnapshot,
        policy: &ResolvedPolicy,
        advice: Advice<'_>,
        now: i64,
    ) -> Decision {
        // A poisoned lock only means another request panicked mid-update: the map is still a valid map.
        let mut targets = self
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        targets.retain(|_, (_, seen)| now.saturating_sub(*seen) < IDLE_SECONDS);
        let state = targets
            .get(&snapshot.target)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        let decision = ipa_core::decide(snapshot, policy, advice, &state, now);
        if targets.len() >= MAX_TARGETS && !targets.contains_key(&snapshot.target) {
            let oldest = targets
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                targets.remove(&oldest);
            }
        }
        targets.insert(snapshot.target.clone(), (decision.state.clone(), now));
        decision
    }

    pub fn len(&self) -> usize {
        self.targets.lock().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::{Policy, SeriesStats};

    fn snapshot(name: &str, replicas: u32, cpu: f64) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ns".into(),
                deployment: name.into(),
            },
            0,
            replicas,
        );
        s.cpu_per_pod = Some(SeriesStats::constant(cpu, 20));
        s.containers.push(ipa_core::ContainerSnapshot {
            name: "app".into(),
            requests: ipa_core::Resources {
                cpu: Some(ipa_core::CpuMillis(1000)),
                memory: None,
            },
            limits: ipa_core::Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        });
        s
    }

    #[test]
    fn the_scale_down_window_holds_across_seed_requests() {
        let store = GuardStore::default();
        let p = Policy::default().resolve();
        let up = store.decide(&snapshot("a", 4, 1.4), &p, Advice::Builtin, 0);
        assert_eq!(up.replicas, 8);
        // The load drops at once: the seed asks again a minute later; the window remembers the 8.
        let held = store.decide(&snapshot("a", 8, 0.1), &p, Advice::Builtin, 60);
        assert_eq!(held.replicas, 8);
        let down = store.decide(&snapshot("a", 8, 0.1), &p, Advice::Builtin, 200);
        assert!(down.replicas < 8);
    }

    #[test]
    fn bounded_and_expiring() {
        let store = GuardStore::default();
        let p = Policy::default().resolve();
        for i in 0..MAX_TARGETS + 10 {
            let _ = store.decide(&snapshot(&format!("d{i}"), 1, 0.1), &p, Advice::None, 0);
        }
        assert_eq!(store.len(), MAX_TARGETS);
        let _ = store.decide(&snapshot("late", 1, 0.1), &p, Advice::None, IDLE_SECONDS);
        assert_eq!(store.len(), 1);
    }
}
