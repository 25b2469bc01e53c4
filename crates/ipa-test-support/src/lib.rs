//! Dev-only helpers shared by IPA's test suites, so each lives once:
//!
//! - [`bed`]: the harness for tests against the real test bed (`make testbed-up`): connecting from
//!   `testbed/.env`, namespaces, the seed's test app, load through the load simulator, Prometheus queries and
//!   polling. Used by the controller's and the load simulator's end-to-end suites.
//! - [`auth_proxy`]: a reverse proxy that wants a bearer token, in front of the bed's Prometheus (a managed
//!   Prometheus, for the `prometheusAuth` test).
//! - [`snapshots`]: the snapshot and policy builders, re-exported from `ipa_core::test_support` (they live in
//!   the core behind its `test-support` feature so that the core's own unit tests can use them too: a unit test
//!   of `ipa-core` cannot use a crate that depends on `ipa-core`, its types would be a second copy).

pub mod auth_proxy;
pub mod bed;

pub use ipa_core::test_support as snapshots;

/// What every helper returns: any error, with the context a failing test should print.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
