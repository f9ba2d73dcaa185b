//! `keyshift proxy` (being built).

/// Flags of `keyshift proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {}

/// Runs `keyshift proxy`.
pub fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("keyshift proxy is being built")
}
