//! IPA controller.

/// Arguments of `ipa controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub async fn run(_args: ControllerArgs) -> Result<(), Error> {
    Ok(())
}
