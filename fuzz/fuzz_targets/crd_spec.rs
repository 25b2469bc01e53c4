//! An `IPA` object as the controller's watch receives it (JSON): the spec anyone who may create an IPA writes,
//! and the status, whose guard state anyone who may patch the status can craft. The controller's own checks and
//! defaults must hold for every object the API server could hand over (its CEL rules may be older than the
//! object): bounded intervals, a sane resolved policy per group, other namespaces refused without an opt-in, URL
//! refusals that never echo the URL, and a decision within the policy from any stored guard state.
#![no_main]

use std::sync::OnceLock;

use ipa_controller::crd::{MAX_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS};
use ipa_controller::summarize::policy_of;
use ipa_controller::urls::UrlPolicy;
use ipa_controller::{IPA, tenancy};
use ipa_core::{Advice, GuardState, decide};
use ipa_fuzz::{assert_decision_within, assert_policy_sane, two_container_snapshot};
use libfuzzer_sys::fuzz_target;

fn url_policy() -> &'static UrlPolicy {
    static POLICY: OnceLock<UrlPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        UrlPolicy::new(&[], Some("http://ipa-agent.ipa-system.svc:8000"))
            .unwrap_or_else(|e| panic!("url policy: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(ipa) = serde_json::from_slice::<IPA>(data) else {
        return;
    };
    let meta = &ipa.spec.metadata;
    let (interval, sync) = (meta.interval(), meta.sync_period());
    assert!((MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&interval.as_secs()));
    assert!(sync.as_secs() >= MIN_INTERVAL_SECONDS && sync <= interval);
    for url in [&meta.prometheus_uri, &meta.llm_agent] {
        if let Err(refusal) = url_policy().check(url) {
            let text = refusal.to_string();
            assert!(
                url.trim().len() < 4 || !text.contains(url.trim()),
                "{text:?} echoes {url:?}"
            );
        }
    }
    let own_namespace = ipa.metadata.namespace.as_deref().unwrap_or("default");
    for group in &meta.ipa_group {
        let _ = (
            meta.mode_of(group),
            meta.update_mode_of(group),
            group.demand_query(),
        );
        let access = tenancy::access(own_namespace, &group.namespace, None, false);
        assert_eq!(access.allowed(), group.namespace == own_namespace);
        let in_place = meta.update_mode_of(group).in_place();
        assert_policy_sane(&policy_of(group, interval, sync, in_place));
    }
    let Some(status) = &ipa.status else {
        return;
    };
    for (i, stored) in status.groups.iter().enumerate() {
        let Some(group) = meta.ipa_group.get(i) else {
            break;
        };
        let in_place = meta.update_mode_of(group).in_place();
        let policy = policy_of(group, interval, sync, in_place);
        let snapshot = two_container_snapshot(stored.current_replicas.unwrap_or(3));
        let state = GuardState::from(&stored.guard_state);
        let decision = decide(&snapshot, &policy, Advice::Builtin, &state, 1_800_000_000);
        assert_decision_within(&decision, &snapshot, &policy);
    }
});
