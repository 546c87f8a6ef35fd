//! `brim run`: the batch framework (owned by the framework/CLI work; placeholder).
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[arg(trailing_var_arg = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) async fn run(_a: RunArgs) -> anyhow::Result<u8> {
    anyhow::bail!("brim run is not built yet")
}
