//! `spinr fit`: fit an image as a sparse INR. Work in progress.

use clap::Args;

#[derive(Args, Debug)]
pub struct FitArgs {
    /// The image to fit.
    pub image: std::path::PathBuf,
}

pub fn run(_a: FitArgs) -> anyhow::Result<()> {
    anyhow::bail!("spinr fit is not implemented yet")
}
