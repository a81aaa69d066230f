//! `spinr plant`: the paper's planted-network experiments.

use super::DeviceArgs;
use crate::backend;
use crate::error::Param;
use crate::iht::{FirstStep, IhtChoices, Refine, Task, Variant};
use crate::inr::fit::Method;
use crate::plant::{self, PlantSpec};
use crate::problem::GateMode;
use clap::Args;
use std::time::Instant;

/// The flag of `spinr plant` that sets each quantity.
pub fn flag(p: Param) -> Option<&'static str> {
    Some(match p {
        Param::Samples => "--samples",
        Param::Inputs => "--inputs",
        Param::Neurons => "--neurons",
        Param::Nonzeros => "--nonzeros",
        Param::BatchSize => "--batch-size",
        Param::Iters => "--iters",
        Param::Inner => "--inner",
        Param::Gates => "--gates",
        Param::Method => "--method",
        _ => return None,
    })
}

#[derive(Args, Debug)]
pub struct PlantArgs {
    /// convex (fixed random gates), sequential (the paper's ReLU rule) or gaussian (plain
    /// compressed sensing with an n × m·d Gaussian matrix).
    #[arg(long, value_enum, default_value = "convex")]
    pub gates: GateMode,
    /// Input dimension d.
    #[arg(long, default_value_t = 100)]
    pub inputs: usize,
    /// Hidden neurons m.
    #[arg(long, default_value_t = 50)]
    pub neurons: usize,
    /// Nonzero weights s (planted and fitted).
    #[arg(long, default_value_t = 100)]
    pub nonzeros: usize,
    /// Training samples n.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Maximum IHT iterations (epochs); stops earlier once the fit is exact or stalls.
    #[arg(long, default_value_t = plant::DEFAULT_ITERS)]
    pub iters: usize,
    /// Refinement steps K per IHT step (default: 10, or 3 for gaussian).
    #[arg(long)]
    pub inner: Option<usize>,
    /// spinr (defaults chosen by sweeps) or paper (the paper's code's choices: Armijo
    /// refinement, its first step).
    #[arg(long, value_enum, default_value = "spinr")]
    pub variant: Variant,
    /// iht, or imp (iterative magnitude pruning of the dense network, the paper's baseline;
    /// sequential gates only, --iters epochs per round).
    #[arg(long, value_enum, default_value = "iht")]
    pub method: Method,
    /// Samples per IHT update (minibatch); default full batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Step size of the first step: paper (μ = 1e-14, the default) or normalized.
    #[arg(long, value_enum)]
    pub first_step: Option<FirstStep>,
    /// Refinement step size: armijo (the normalised step once, then halved: the default and the
    /// paper's) or exact (the normalised step recomputed at every inner step).
    #[arg(long, value_enum)]
    pub refine: Option<Refine>,
    /// Every 5 epochs re-seed a neuron around samples no neuron reaches (sequential gates;
    /// default false: on planted networks it only costs time).
    #[arg(long, value_name = "true|false")]
    pub rescue: Option<bool>,
    /// Rounds of 20 conjugate-gradient steps on the final support after the last epoch
    /// (sequential gates, full batch; default 0).
    #[arg(long, value_name = "R")]
    pub polish: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PlantArgs) -> anyhow::Result<()> {
    let spec = PlantSpec {
        gates: a.gates,
        inputs: a.inputs,
        neurons: a.neurons,
        nonzeros: a.nonzeros,
        samples: a.samples,
        seed: a.seed,
    };
    let choices = IhtChoices {
        inner: a.inner,
        refine: a.refine,
        first_step: a.first_step,
        rescue: a.rescue,
        polish: a.polish,
    };
    let mut cfg = choices.resolve(a.variant, Task::Planted, a.nonzeros, a.iters, a.gates)?;
    cfg.batch_size = a.batch_size;
    cfg.seed = a.seed;
    let planted = spec.build()?;
    let verbose = super::verbose();
    let mut report = match a.method {
        Method::Iht => {
            let mut be = backend::create_with(
                a.device.backend,
                a.device.adapter.as_deref(),
                planted.train.clone(),
                a.nonzeros,
                super::gpu_options(a.batch_size.is_some()),
            )?;
            let info = be.info();
            a.device.announce(&info);
            let start = Instant::now();
            let fit = plant::run(be.as_backend(), &planted, &cfg, |r| {
                if verbose {
                    eprintln!("epoch {:4}  loss {:.6e}", r.epoch, r.loss);
                }
            })?;
            let seconds = start.elapsed().as_secs_f64();
            super::print_dispatch_profile(be.as_ref());
            let mut report =
                plant::score_iht(&spec, &planted, &fit, info.kind, &info.adapter, seconds)?;
            report.peak_device_bytes = be.memory().peak_bytes;
            report
        }
        Method::Imp => {
            let device =
                crate::imp::ImpDevice::from_choice(a.device.backend, a.device.adapter.as_deref())?;
            a.device.announce(&device.info());
            plant::run_imp(&spec, &planted, a.iters, a.batch_size, &device, |r| {
                if verbose {
                    eprintln!(
                        "round {:3}  {:8} weights  loss {:.6e}",
                        r.round, r.nonzeros, r.loss
                    );
                }
                std::ops::ControlFlow::Continue(())
            })?
        }
    };
    report.method = a.method;
    report.variant = a.variant;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} planted network: d={} m={} s={} n={} seed={} on {} ({})",
            report.gates.as_str(),
            report.inputs,
            report.neurons,
            report.nonzeros,
            report.samples,
            report.seed,
            report.backend,
            report.adapter
        );
        println!(
            "  recovered: {}   relative error {:.3e}   support errors {}",
            if report.recovered { "yes" } else { "no" },
            report.relative_error,
            report.support_errors
        );
        println!(
            "  PSNR train {:.2} dB, test {:.2} dB   {} iterations in {:.2} s",
            report.train_psnr, report.test_psnr, report.iterations, report.seconds
        );
    }
    Ok(())
}
