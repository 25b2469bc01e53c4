//! The advisory loop's answers. Once per `interval` the agent is asked for every target of an IPA, in a task of
//! its own; the cycle that asked waits for it only briefly ([`WAIT_FOR_ANSWERS`]), and answers that come later
//! are used by the first fast cycle after they arrive. So an LLM that takes 10–30 s to answer never delays a
//! scale-up, and the agent is asked once per interval however often the fast loop runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ipa_core::{Recommendation, TargetRef};

/// How long a cycle that asked the agent waits for its answers before deciding without them.
pub const WAIT_FOR_ANSWERS: Duration = Duration::from_secs(2);

/// One target's answer: the agent's proposal, or why asking failed.
pub type Answer = Result<Recommendation, String>;

#[derive(Debug, Default)]
struct Pending {
    in_flight: bool,
    answers: HashMap<TargetRef, Answer>,
}

/// Answers not yet used, per IPA (`namespace/name`). Bounded by the IPAs and targets that exist: each IPA's
/// answers are replaced by its next ask and taken by its next cycle.
#[derive(Debug, Default)]
pub struct Advisories {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Advisories {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        // A poisoned lock only means a task panicked mid-update; the map is still a valid map.
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut pending)
    }

    /// Marks an ask for `ipa` as started; `false` when the previous one is still running (it is not doubled).
    pub fn start(&self, ipa: &str) -> bool {
        self.with(|p| {
            let entry = p.entry(ipa.to_string()).or_default();
            !std::mem::replace(&mut entry.in_flight, true)
        })
    }

    pub fn put(&self, ipa: &str, target: TargetRef, answer: Answer) {
        self.with(|p| {
            p.entry(ipa.to_string())
                .or_default()
                .answers
                .insert(target, answer);
        });
    }

    pub fn finish(&self, ipa: &str) {
        self.with(|p| {
            if let Some(entry) = p.get_mut(ipa) {
                entry.in_flight = false;
            }
        });
    }

    /// The answers that arrived for `ipa` since its last cycle, taken (each is used once).
    pub fn take(&self, ipa: &str) -> HashMap<TargetRef, Answer> {
        self.with(|p| {
            p.get_mut(ipa)
                .map(|entry| std::mem::take(&mut entry.answers))
                .unwrap_or_default()
        })
    }

    /// Forgets an IPA that was deleted.
    pub fn forget(&self, ipa: &str) {
        self.with(|p| {
            p.remove(ipa);
        });
    }
}

/// Whether the advisory loop is due: the last ask was at least `interval` ago (with a second of slack, so a
/// requeue that fires a little early still asks).
pub fn due(last_advice: Option<i64>, interval: Duration, now: i64) -> bool {
    let interval = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
    last_advice.is_none_or(|last| now.saturating_sub(last) >= interval.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(d: &str) -> TargetRef {
        TargetRef {
            namespace: "ns".into(),
            deployment: d.into(),
        }
    }

    #[test]
    fn answers_are_used_once_and_asks_are_not_doubled() {
        let a = Advisories::default();
        assert!(a.start("ns/ipa"));
        assert!(!a.start("ns/ipa"), "still in flight");
        a.put("ns/ipa", target("web"), Err("timeout".into()));
        a.finish("ns/ipa");
        assert!(a.start("ns/ipa"));
        let taken = a.take("ns/ipa");
        assert_eq!(taken.len(), 1);
        assert!(a.take("ns/ipa").is_empty());
        a.forget("ns/ipa");
        assert!(a.take("ns/ipa").is_empty());
    }

    #[test]
    fn due_once_per_interval() {
        let i = Duration::from_secs(60);
        assert!(due(None, i, 0));
        assert!(!due(Some(0), i, 30));
        assert!(due(Some(0), i, 59));
        assert!(due(Some(0), i, 60));
    }
}
