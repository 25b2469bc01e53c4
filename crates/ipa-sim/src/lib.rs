//! IPA's simulator: replays a workload through a cluster model under any policy and scores the result.

pub mod cli;
pub mod model;
