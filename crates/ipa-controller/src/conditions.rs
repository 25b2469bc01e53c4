//! Status conditions, Kubernetes style: `lastTransitionTime` only moves when `status` flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const AGENT_AVAILABLE: &str = "AgentAvailable";
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const TARGET_FOUND: &str = "TargetFound";
pub const APPLIED: &str = "Applied";
/// On the IPA: every target is in its namespace or in one that opted in (see `tenancy`).
pub const TARGETS_ALLOWED: &str = "TargetsAllowed";

/// A condition we want to report, before transition-time bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Want {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Materialises `wanted` conditions, keeping the previous transition time of those whose status is unchanged.
pub fn merge(
    previous: &[Condition],
    wanted: &[Want],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: w.type_.to_string(),
                status: status.to_string(),
                reason: w.reason.clone(),
                message: truncate(&w.message, 1024),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    cut(text, max).to_string()
}

/// At most `max` bytes of `text`, cut at a character boundary (the API counts bytes). (`str::floor_char_boundary`
/// once the MSRV reaches 1.91.)
pub(crate) fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether the condition `type_` is `True` in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t0 = jiff::Timestamp::from_second(100).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let t1 = jiff::Timestamp::from_second(200).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let first = merge(
            &[],
            &[Want::new(READY, true, "Reconciled", "ok")],
            Some(1),
            t0,
        );
        let same = merge(
            &first,
            &[Want::new(READY, true, "Reconciled", "ok again")],
            Some(1),
            t1,
        );
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].message, "ok again");
        let flipped = merge(
            &same,
            &[Want::new(READY, false, "Failed", "no")],
            Some(2),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].status, "False");
        assert!(is_true(&same, READY) && !is_true(&flipped, READY));
    }
}
