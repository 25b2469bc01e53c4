//! `ipa_core::decide` on a snapshot, policy, guard state and proposal as they arrive from outside: the snapshot
//! JSON of `/v1/recommend`, the IPA's policy, the guard state kept in the IPA's status (anyone who may edit the
//! status may craft it) and an agent's proposal. The decision lies within the policy, and the state it leaves
//! behind decides again without trouble.
#![no_main]

use ipa_core::{Advice, GuardState, MetricsSnapshot, Policy, Recommendation, decide};
use ipa_fuzz::{assert_decision_within, assert_policy_sane};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    snapshot: MetricsSnapshot,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    state: GuardState,
    #[serde(default)]
    proposal: Option<Recommendation>,
    /// The advisor failed (ignored when there is a proposal).
    #[serde(default)]
    failed: bool,
    /// The fast loop: no advisor at all (ignored when there is a proposal).
    #[serde(default)]
    fast: bool,
    #[serde(default)]
    now: i64,
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = serde_json::from_slice::<Case>(data) else {
        return;
    };
    let policy = case.policy.resolve();
    assert_policy_sane(&policy);
    let advice = match (&case.proposal, case.failed, case.fast) {
        (Some(rec), _, _) => Advice::Proposal(rec),
        (None, true, _) => Advice::Failed("fuzz"),
        (None, false, true) => Advice::None,
        (None, false, false) => Advice::Builtin,
    };
    let decision = decide(&case.snapshot, &policy, advice, &case.state, case.now);
    assert_decision_within(&decision, &case.snapshot, &policy);
    let later = case
        .now
        .saturating_add(i64::from(policy.sync_period_seconds));
    let next = decide(
        &case.snapshot,
        &policy,
        Advice::None,
        &decision.state,
        later,
    );
    assert_decision_within(&next, &case.snapshot, &policy);
    // The state is what the controller writes back to the IPA's status.
    assert!(serde_json::to_string(&next.state).is_ok());
});
