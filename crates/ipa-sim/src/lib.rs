//! IPA's simulator: replays a workload through a cluster model under any policy and scores the result.
//!
//! - `trace`: trace loading, resampling, gap handling, mapping to demand; synthetic patterns.
//! - `model`: the application model shared with the test bed's load simulator.
//! - `cluster`: pods, lifecycle, serving, OOM kills, rolling updates.
//! - `policy`: the `Autoscaler` trait and the `ipa`, `hpa`, `vpa`, `static` and `oracle` policies.
//! - `score`: cost, SLO-violation minutes and the SPEC RG elasticity metrics.
//! - `run`: the simulation loop. `report`: HTML with SVG charts. `cli`: `ipa simulate` and `ipa bench`.

pub mod cli;
pub mod cluster;
pub mod model;
pub mod policy;
pub mod report;
pub mod run;
pub mod score;
pub mod targets;
pub mod trace;
