//! `keyshift autoscale` (being built).

/// Flags of `keyshift autoscale`.
#[derive(Debug, clap::Args)]
pub struct AutoscaleArgs {}

/// Runs `keyshift autoscale`.
pub fn run(_args: AutoscaleArgs) -> anyhow::Result<()> {
    anyhow::bail!("keyshift autoscale is being built")
}
