//! `spinr render`: render a saved model. Work in progress.

use clap::Args;

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The model file (model.safetensors).
    pub model: std::path::PathBuf,
}

pub fn run(_a: RenderArgs) -> anyhow::Result<()> {
    anyhow::bail!("spinr render is not implemented yet")
}
