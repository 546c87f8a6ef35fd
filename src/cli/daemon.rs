//! `brim master` and `brim agent` (placeholder).
#[derive(clap::Args)]
pub(crate) struct MasterArgs {}
#[derive(clap::Args)]
pub(crate) struct AgentArgs {}

pub(crate) async fn master(_a: MasterArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
pub(crate) async fn agent(_a: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
