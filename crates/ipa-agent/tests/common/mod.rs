//! Shared test inputs: the snapshot builders come from ipa-test-support; the fixtures are this crate's own.
// Each test binary uses a part of this module.
#![allow(dead_code, unused_imports)]

pub use ipa_test_support::snapshots::{hot_web_snapshot as snapshot, stats};

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| format!("cannot read {path}: {e}"))
}
