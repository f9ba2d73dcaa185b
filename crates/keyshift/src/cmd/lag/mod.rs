//! `keyshift lag` (being built).

/// Flags of `keyshift lag`.
#[derive(Debug, clap::Args)]
pub struct LagArgs {}

/// Runs `keyshift lag`.
pub fn run(_args: LagArgs) -> anyhow::Result<()> {
    anyhow::bail!("keyshift lag is being built")
}
