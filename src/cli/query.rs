//! `brim tasks|agents|frameworks` (placeholder).
#[derive(clap::Args)]
pub(crate) struct QueryArgs {
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn tasks(_a: QueryArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
pub(crate) async fn agents(_a: QueryArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
pub(crate) async fn frameworks(_a: QueryArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
