//! IPA agent.

/// Arguments of `ipa agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub async fn run(_args: AgentArgs) -> Result<(), Error> {
    Ok(())
}
