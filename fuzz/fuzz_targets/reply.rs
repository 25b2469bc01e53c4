//! The LLM-reply parser (`ipa_core::reply::parse_reply`): any text a model (or whoever answers in its place) may
//! send. Accepted replies lie within the policy, and what was accepted, rendered in our reply shape, parses back
//! to the same replicas and resources.
#![no_main]

use ipa_core::reply::{parse_reply, to_reply_json};
use ipa_fuzz::{
    assert_containers_within, assert_replicas_within, policy_from, two_container_snapshot,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((knobs, text)) = data.split_first_chunk::<4>() else {
        return;
    };
    let policy = policy_from(*knobs).resolve();
    let snapshot = two_container_snapshot(3);
    let text = String::from_utf8_lossy(text);
    let Ok(rec) = parse_reply(&text, &snapshot, &policy) else {
        return;
    };
    assert_replicas_within(rec.replicas, &policy);
    assert_containers_within(&rec.containers, &snapshot, &policy);
    assert!(!policy.vertical || rec.containers.len() <= snapshot.containers.len());
    let rendered = to_reply_json(&rec).to_string();
    match parse_reply(&rendered, &snapshot, &policy) {
        Ok(again) => assert_eq!(
            (again.replicas, &again.containers),
            (rec.replicas, &rec.containers),
            "{rendered}"
        ),
        Err(e) => panic!("our own rendering {rendered} was rejected: {e}"),
    }
});
