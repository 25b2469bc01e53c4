//! The seed protocol's metrics text (`POST /askllm` `{"metrics": "<text>"}` → `ipa_agent::seed::parse_metrics`),
//! then what the route does with the snapshot: name checks, the built-in recommendation, the prompt, the guarded
//! decision and the seed's flat answer, whose four strings the seed's Go controller `MustParse`s.
#![no_main]

use ipa_agent::guards::GuardStore;
use ipa_agent::{names, seed};
use ipa_core::{Advice, Policy, Recommendation, prompt, recommend};
use ipa_fuzz::{
    assert_containers_within, assert_decision_within, assert_replicas_within,
    assert_seed_answer_sane,
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let snapshot = seed::parse_metrics(&text, NOW);
    if names::check_request(&snapshot, &Policy::default()).is_err() {
        return;
    }
    let policy = Policy::default().resolve();
    let rec = recommend(&snapshot, &policy);
    assert_replicas_within(rec.replicas, &policy);
    assert_containers_within(&rec.containers, &snapshot, &policy);
    let _ = prompt::build(&snapshot, &policy);
    let decision = GuardStore::default().decide(&snapshot, &policy, Advice::Proposal(&rec), NOW);
    assert_decision_within(&decision, &snapshot, &policy);
    let decided = Recommendation {
        containers: decision.containers,
        ..Recommendation::new(decision.replicas, decision.source)
    };
    let answer = seed::to_seed_recommendation(&decided, &snapshot);
    assert_seed_answer_sane(&answer);
});
