//! `ipa simulate` and `ipa bench`.

/// Arguments of `ipa simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {}

/// Arguments of `ipa bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

#[derive(Debug, thiserror::Error)]
pub enum CliError {}

pub fn simulate(_args: &SimulateArgs) -> Result<(), CliError> {
    Ok(())
}

pub fn bench(_args: &BenchArgs) -> Result<(), CliError> {
    Ok(())
}
