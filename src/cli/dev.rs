//! `brim dev` (placeholder).
#[derive(clap::Args)]
pub(crate) struct DevArgs {}

pub(crate) async fn run(_a: DevArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
