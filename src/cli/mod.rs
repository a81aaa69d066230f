//! The command line: argument definitions here, one module per subcommand.

pub mod bench;
pub mod devices;
pub mod fit;
pub mod plant;
pub mod render;

use crate::backend::BackendChoice;
use crate::problem::GateMode;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "spinr",
    version,
    about = "Sparse ReLU networks by iterative hard thresholding, on any GPU or the CPU",
    after_help = "Exit codes: 0 success, 1 runtime error, 2 bad arguments or input, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Recover a planted sparse network (the paper's synthetic experiments).
    Plant(plant::PlantArgs),
    /// Fit an image as a sparse ReLU network (implicit neural representation).
    Fit(fit::FitArgs),
    /// Render a saved model to an image at any size.
    Render(render::RenderArgs),
    /// Measure the device's ceilings, every kernel and a whole IHT step.
    Bench(bench::BenchArgs),
    /// List the GPU adapters wgpu sees and their limits.
    Devices(devices::DevicesArgs),
}

/// Where the computation runs.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, gpu (any wgpu adapter, software ones included) or auto (a real GPU if there is one).
    #[arg(long, value_enum, default_value = "auto", env = "SPINR_BACKEND")]
    pub backend: BackendChoice,
    /// Use the first GPU adapter whose name contains this (case-insensitive).
    #[arg(long, value_name = "NAME-SUBSTRING", env = "SPINR_ADAPTER")]
    pub adapter: Option<String>,
}

/// The IHT options shared by every fitting command.
#[derive(Args, Debug, Clone)]
pub struct GateArgs {
    /// convex (fixed random gates), sequential (the paper's ReLU rule) or gaussian (plain
    /// compressed sensing).
    #[arg(long, value_enum)]
    pub gates: GateMode,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plant(a) => plant::run(a),
        Command::Fit(a) => fit::run(a),
        Command::Render(a) => render::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Devices(a) => devices::run(a),
    }
}

/// Exit code for an error: 2 for bad arguments or input, 130 for an interrupt, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::error::Error;
    match e.downcast_ref::<Error>() {
        Some(Error::InvalidArgument { .. })
        | Some(Error::NonFinite { .. })
        | Some(Error::Image { .. })
        | Some(Error::Model { .. }) => 2,
        Some(Error::Interrupted) => 130,
        _ => 1,
    }
}
