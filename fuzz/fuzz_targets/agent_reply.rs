//! The controller's reading of an agent's answer — ours (`Recommendation` JSON) or the seed's (`{"status",
//! "message", "text": {...}}`) — and the guarded decision it feeds. Whatever the agent says, including the
//! `source` it claims, the decision lies within the policy.
#![no_main]

use ipa_controller::ask::agent::{from_seed, parse_recommendation};
use ipa_core::{Advice, GuardState, SeedResponse, decide};
use ipa_fuzz::{assert_decision_within, policy_from, two_container_snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((knobs, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let policy = policy_from(*knobs).resolve();
    let snapshot = two_container_snapshot(u32::from(knobs[0]));
    let mut proposals = Vec::new();
    if let Ok(rec) = parse_recommendation(body) {
        assert!(rec.notes.is_empty(), "notes from the network kept");
        proposals.push(rec);
    }
    if let Ok(seed) = serde_json::from_slice::<SeedResponse>(body)
        && let Ok(rec) = from_seed(&seed, &snapshot)
    {
        proposals.push(rec);
    }
    for rec in &proposals {
        let decision = decide(
            &snapshot,
            &policy,
            Advice::Proposal(rec),
            &GuardState::default(),
            1_800_000_000,
        );
        assert_decision_within(&decision, &snapshot, &policy);
    }
});
