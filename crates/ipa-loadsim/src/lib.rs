//! IPA loadsim.

/// Arguments of `ipa loadsim`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadsimArgs {}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub async fn run(_args: LoadsimArgs) -> Result<(), Error> {
    Ok(())
}
