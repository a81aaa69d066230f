//! The command line: argument definitions, one module per subcommand, and the only place that
//! reads the environment or prints. Library errors name a quantity ([`Param`]); this module
//! names the flag of the running command that sets it.

pub mod bench;
pub mod classify;
pub mod devices;
pub mod fit;
pub mod plant;
pub mod progress;
pub mod render;
pub mod sweep;

use crate::backend::gpu::{GpuOptions, ShaderChecks, SupportOrder};
use crate::backend::{BackendChoice, BackendInfo, Device};
use crate::error::{Error, Param};
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
    /// Train a sparse classifier (MNIST-style IDX data, CIFAR-10), or predict with one.
    Classify(classify::ClassifyArgs),
    /// Render a saved model to an image at any size.
    Render(render::RenderArgs),
    /// Run a grid of image fits, planted recoveries or classifiers (method × m × s × seed)
    /// into one resumable results.csv and the paper's heatmaps; `spinr sweep merge` joins
    /// shards.
    Sweep(sweep::SweepArgs),
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

impl DeviceArgs {
    /// Says on stderr which backend `auto` chose.
    pub fn announce(&self, info: &BackendInfo) {
        match (self.backend, info.kind) {
            (BackendChoice::Cpu, _) => {}
            (BackendChoice::Auto, "cpu") => {
                eprintln!("spinr: no GPU found, using the CPU backend")
            }
            _ => eprintln!("spinr: using GPU {}", info.adapter),
        }
    }
}

/// `SPINR_VERBOSE` set: one line per epoch on stderr.
pub fn verbose() -> bool {
    std::env::var_os("SPINR_VERBOSE").is_some()
}

/// The GPU backend's options for a fit (`minibatch`: features sample-major) with the knobs the
/// environment sets: `SPINR_APPLY_THREADS`, `SPINR_SHADER_CHECKS`, `SPINR_GPU_PROFILE`
/// (README, "GPUs").
pub fn gpu_options(minibatch: bool) -> GpuOptions {
    gpu_options_from(minibatch, |name| std::env::var(name).ok())
}

fn gpu_options_from(minibatch: bool, var: impl Fn(&str) -> Option<String>) -> GpuOptions {
    GpuOptions {
        feature_major: !minibatch,
        // A tuning knob for new hardware, without a rebuild.
        apply_threads: var("SPINR_APPLY_THREADS").and_then(|v| v.parse().ok()),
        shader_checks: match var("SPINR_SHADER_CHECKS").as_deref() {
            Some("all") => ShaderChecks::All,
            Some("none") => ShaderChecks::None,
            _ => ShaderChecks::Bounds,
        },
        profile_dispatches: var("SPINR_GPU_PROFILE").is_some(),
        // The support passes' order, until hardware measurements choose a default.
        support_order: match var("SPINR_SUPPORT_ORDER").as_deref() {
            Some("feature") => SupportOrder::Feature,
            _ => SupportOrder::Neuron,
        },
        // A test aid: a lost device after N device checks (the failed-fit recovery).
        fail_after_checks: var("SPINR_GPU_FAIL_AFTER").and_then(|v| v.parse().ok()),
        ..GpuOptions::default()
    }
}

/// `--max-memory SIZE`: bytes, or with a unit (512M, 8G).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    crate::budget::parse_size(s)
}

/// The memory an operation may use: `--max-memory` if given, else what the machine has
/// available (Linux `MemAvailable`), else no limit.
pub fn memory_budget(max: Option<u64>) -> crate::budget::Budget {
    use crate::budget::{available_memory, Budget};
    match (max, available_memory()) {
        (Some(bytes), _) => Budget {
            bytes,
            source: "--max-memory".into(),
        },
        (None, Some(bytes)) => Budget {
            bytes,
            source: "the memory this machine has available (MemAvailable; --max-memory sets \
                     another budget)"
                .into(),
        },
        (None, None) => Budget {
            bytes: u64::MAX,
            source: "unlimited".into(),
        },
    }
}

/// The per-dispatch wall-clock profile (`SPINR_GPU_PROFILE`) on stderr, slowest first.
pub fn print_dispatch_profile(dev: &dyn Device) {
    let Some(mut p) = dev.dispatch_profile() else {
        return;
    };
    p.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    eprintln!("spinr: GPU profile (each dispatch alone, wall clock):");
    for k in p {
        let what = if k.name.starts_with('(') {
            "calls"
        } else {
            "dispatches"
        };
        eprintln!(
            "  {:<16} {:>8} {what:<10} {:>12.3} ms",
            k.name,
            k.dispatches,
            k.seconds * 1e3
        );
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let flags: fn(Param) -> Option<&'static str> = match &cli.command {
        Command::Plant(_) => plant::flag,
        Command::Fit(_) => fit::flag,
        Command::Classify(_) => classify::flag,
        Command::Render(_) => render::flag,
        Command::Sweep(_) => sweep::flag,
        Command::Bench(_) => bench::flag,
        Command::Devices(_) => |_| None,
    };
    let result = match cli.command {
        Command::Plant(a) => plant::run(a),
        Command::Fit(a) => fit::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Render(a) => render::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Devices(a) => devices::run(a),
    };
    result.map_err(|e| name_flag(e, flags))
}

/// Rewrites a library error about a quantity into one naming the command's flag for it.
fn name_flag(e: anyhow::Error, flags: fn(Param) -> Option<&'static str>) -> anyhow::Error {
    // Only a bare quantity error is rewritten; anything else keeps its context (a failed
    // fit's note on what was saved, say).
    if let Some(Error::Invalid { param, msg }) = e.downcast_ref::<Error>() {
        if e.chain().count() == 1 {
            if let Some(flag) = flags(*param) {
                return Error::InvalidArgument {
                    flag,
                    msg: msg.clone(),
                }
                .into();
            }
        }
    }
    e
}

/// Exit code for an error: 2 for bad arguments or input, 130 for an interrupt, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(Error::Interrupted) => 130,
        Some(err) if err.is_bad_input() => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_options_come_from_the_environment_as_before() {
        let none = gpu_options_from(true, |_| None);
        assert!(!none.feature_major && none.apply_threads.is_none());
        assert_eq!(none.shader_checks, ShaderChecks::Bounds);
        assert!(!none.profile_dispatches);
        let env = |name: &str| match name {
            "SPINR_APPLY_THREADS" => Some("4096".to_string()),
            "SPINR_SHADER_CHECKS" => Some("none".to_string()),
            "SPINR_GPU_PROFILE" => Some(String::new()),
            "SPINR_SUPPORT_ORDER" => Some("feature".to_string()),
            _ => None,
        };
        let set = gpu_options_from(false, env);
        assert!(set.feature_major && set.profile_dispatches);
        assert_eq!(set.support_order, SupportOrder::Feature);
        assert_eq!(none.support_order, SupportOrder::Neuron);
        assert_eq!(set.apply_threads, Some(4096));
        assert_eq!(set.shader_checks, ShaderChecks::None);
        let all = gpu_options_from(false, |n| {
            (n == "SPINR_SHADER_CHECKS").then(|| "all".to_string())
        });
        assert_eq!(all.shader_checks, ShaderChecks::All);
        let bad = gpu_options_from(false, |n| {
            (n == "SPINR_APPLY_THREADS").then(|| "many".to_string())
        });
        assert_eq!(bad.apply_threads, None);
    }

    /// Help text comes from doc comments, which may hold rustdoc links (`[`Name`]`) that mean
    /// nothing on a terminal: every subcommand's long help is checked for them.
    #[test]
    fn help_text_has_no_rustdoc_links() {
        use clap::CommandFactory;
        fn walk(cmd: &mut clap::Command, path: &str, bad: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            for line in help.lines().filter(|l| l.contains("[`")) {
                bad.push(format!("{path}: {}", line.trim()));
            }
            for sub in cmd.get_subcommands_mut() {
                let name = format!("{path} {}", sub.get_name());
                walk(sub, &name, bad);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        let mut bad = Vec::new();
        walk(&mut cli, "spinr", &mut bad);
        assert!(
            bad.is_empty(),
            "rustdoc links in --help:\n{}",
            bad.join("\n")
        );
    }
}
