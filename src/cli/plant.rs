//! `spinr plant`: the paper's planted-network experiments.

use super::fit::checkpoints::{self, ImpSaver, Saved, Saver};
use super::{progress, DeviceArgs};
use crate::backend;
use crate::error::{Error, Param};
use crate::iht::{FirstStep, IhtChoices, Refine, Task, Variant};
use crate::inr::fit::Method;
use crate::plant::{self, PlantSpec};
use crate::problem::GateMode;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        Param::Backend => "--backend",
        Param::Outputs => "--outputs",
        _ => return None,
    })
}

#[derive(Args, Debug)]
pub struct PlantArgs {
    /// convex (fixed random gates), sequential (the paper's ReLU rule) or gaussian (plain
    /// compressed sensing with an n × m·d Gaussian matrix). Default convex; with --outputs above
    /// 1 the planted network is a ReLU network (sequential).
    #[arg(long, value_enum)]
    pub gates: Option<GateMode>,
    /// Outputs C of the planted network: 1 (fused scalar output, the paper's Fig. 1) or more
    /// (W1 and W2 trained by the chain rule on squared error, its Fig. 2).
    #[arg(long, default_value_t = 1, value_name = "C")]
    pub outputs: usize,
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
    /// Keep a checkpoint in FILE (every --checkpoint-every seconds, and when interrupted:
    /// Ctrl-C, SIGTERM, SIGHUP); if FILE exists, continue from it (the same command resumes).
    /// The finished run deletes it. Not with --outputs above 1.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Seconds between checkpoints (IMP: at every round boundary); 0 = after every update.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub checkpoint_every: f64,
}

/// What a planted run's checkpoint records of it (compared on resume).
fn describe(a: &PlantArgs, gates: GateMode) -> serde_json::Value {
    serde_json::json!({
        "kind": "plant",
        "gates": gates,
        "outputs": a.outputs,
        "inputs": a.inputs,
        "neurons": a.neurons,
        "nonzeros": a.nonzeros,
        "samples": a.samples,
        "iters": a.iters,
        "inner": a.inner,
        "variant": a.variant,
        "method": a.method,
        "batch_size": a.batch_size,
        "first_step": a.first_step,
        "refine": a.refine,
        "rescue": a.rescue,
        "polish": a.polish,
        "seed": a.seed,
    })
}

/// The checkpoint to resume, if `--checkpoint FILE` names one that exists (checked against
/// this run).
fn saved(a: &PlantArgs, run: &serde_json::Value) -> anyhow::Result<Option<Saved>> {
    let Some(path) = a.checkpoint.as_ref().filter(|p| p.exists()) else {
        return Ok(None);
    };
    let saved = checkpoints::read(path)?;
    crate::checkpoint::check_run(saved.run(), run).map_err(|msg| Error::Checkpoint {
        path: path.clone(),
        msg: format!(
            "{msg}; rerun with the options it was made with, or delete {} to start over",
            path.display()
        ),
    })?;
    eprintln!("spinr: resuming from {}", path.display());
    Ok(Some(saved))
}

/// An interrupted run: the checkpoint holds it.
fn interrupted(a: &PlantArgs) -> anyhow::Error {
    if let Some(p) = &a.checkpoint {
        eprintln!(
            "spinr: stopped; {} holds the run: rerun the same command to continue it",
            p.display()
        );
    }
    Error::Interrupted.into()
}

/// `--verbose`'s line per epoch of an IHT run.
fn log_epoch(verbose: bool) -> impl FnMut(&crate::train::EpochReport) {
    move |r| {
        if verbose {
            eprintln!("epoch {:4}  loss {:.6e}", r.epoch, r.loss);
        }
    }
}

/// After an IHT run: a checkpoint that could not be written, or an interrupt (the checkpoint
/// then holds the run), ends the command.
fn settle(saver: Saver, stopped: bool, a: &PlantArgs) -> anyhow::Result<()> {
    if let Some(e) = saver.error {
        return Err(e.into());
    }
    if stopped {
        return Err(interrupted(a));
    }
    Ok(())
}

/// The finished run's checkpoint is of no further use.
fn remove_checkpoint(a: &PlantArgs) -> anyhow::Result<()> {
    match &a.checkpoint {
        Some(p) if p.exists() => std::fs::remove_file(p).map_err(|e| {
            Error::Io {
                path: p.clone(),
                msg: format!("cannot remove the finished run's checkpoint: {e}"),
            }
            .into()
        }),
        _ => Ok(()),
    }
}

pub fn run(a: PlantArgs) -> anyhow::Result<()> {
    if a.outputs == 0 {
        return Err(
            crate::error::Error::invalid(Param::Outputs, "need at least one output").into(),
        );
    }
    let gates = match (a.gates, a.outputs) {
        (None, 1) => GateMode::Convex,
        (None, _) | (Some(GateMode::Sequential), _) => GateMode::Sequential,
        (Some(g), 1) => g,
        (Some(_), _) => {
            return Err(crate::error::Error::invalid(
                Param::Gates,
                "a planted network with several outputs is a ReLU network: use --gates \
                 sequential or leave --gates out",
            )
            .into())
        }
    };
    let spec = PlantSpec {
        gates,
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
        momentum: None,
        candidates: None,
        grow_from: None,
    };
    if !(a.checkpoint_every.is_finite() && a.checkpoint_every >= 0.0) {
        return Err(Error::arg("--checkpoint-every", "must be a number of seconds ≥ 0").into());
    }
    if a.checkpoint.is_some() {
        progress::install_interrupt_handler(
            "stopping at the next update (IMP: ending this round) and saving the checkpoint",
        );
    }
    let run = describe(&a, gates);
    let saved = saved(&a, &run)?;
    let earlier = saved.as_ref().map_or(0.0, Saved::seconds);
    if a.outputs > 1 {
        return run_vector(&a, &spec, run, saved);
    }
    let mut cfg = choices.resolve(a.variant, Task::Planted, a.nonzeros, a.iters, gates)?;
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
                backend::DEFAULT_FEATURE_CACHE,
            )?;
            let info = be.info();
            a.device.announce(&info);
            let start = Instant::now();
            let resume = saved.as_ref().and_then(Saved::iht_resume);
            let mut saver = saver(&a, run.clone(), earlier);
            let fit = plant::run_from(
                be.as_backend(),
                &planted,
                &cfg,
                resume.as_ref(),
                log_epoch(verbose),
                &mut saver,
            )?;
            settle(saver, fit.stopped, &a)?;
            let seconds = earlier + start.elapsed().as_secs_f64();
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
            let resume = saved.as_ref().and_then(Saved::imp_resume);
            let saver = ImpSaver::new(a.checkpoint.clone(), run.clone(), earlier);
            let mut report = plant::run_imp_from(
                &spec,
                &planted,
                a.iters,
                a.batch_size,
                &device,
                resume,
                |r| {
                    if verbose {
                        eprintln!(
                            "round {:3}  {:8} weights  loss {:.6e}",
                            r.round, r.nonzeros, r.loss
                        );
                    }
                    if a.checkpoint.is_some() && progress::stop_requested() {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                },
                |boundary| saver.save(boundary, serde_json::Value::Null),
            )?;
            if a.checkpoint.is_some() && progress::stop_requested() {
                return Err(interrupted(&a));
            }
            report.seconds += earlier;
            report
        }
    };
    report.method = a.method;
    report.variant = a.variant;
    remove_checkpoint(&a)?;
    print(&report, a.json)
}

/// Saves `--checkpoint FILE` when due and on an interrupt; without the flag, never.
fn saver(a: &PlantArgs, run: serde_json::Value, earlier: f64) -> Saver {
    match &a.checkpoint {
        Some(path) => Saver::new(
            path.clone(),
            run,
            Duration::from_secs_f64(a.checkpoint_every),
            earlier,
            progress::stop_requested,
        ),
        None => Saver::new(PathBuf::new(), run, Duration::MAX, earlier, || false),
    }
}

/// `--outputs C`: the vector-output planted network.
fn run_vector(
    a: &PlantArgs,
    spec: &PlantSpec,
    run: serde_json::Value,
    saved: Option<Saved>,
) -> anyhow::Result<()> {
    let unsupported = |p: Param, what: &str| -> anyhow::Result<()> {
        Err(crate::error::Error::invalid(
            p,
            format!("{what} is not available with --outputs above 1"),
        )
        .into())
    };
    if a.method == Method::Imp {
        return unsupported(Param::Method, "IMP");
    }
    if a.first_step.is_some() || a.refine.is_some() || a.rescue.is_some() || a.polish.is_some() {
        return unsupported(
            Param::Method,
            "--first-step, --refine, --rescue or --polish",
        );
    }
    let c = a.outputs;
    let planted = plant::vector::build(spec, c)?;
    let mut be = crate::backend::vector::create(
        a.device.backend,
        a.device.adapter.as_deref(),
        planted.train.clone(),
        spec.nonzeros,
        a.variant == Variant::Spinr,
    )?;
    let info = be.info();
    a.device.announce(&info);
    let training = plant::vector::training(spec, a.variant, a.iters, a.batch_size, a.inner);
    let verbose = super::verbose();
    let start = Instant::now();
    let resume = saved.as_ref().and_then(Saved::iht_resume);
    let earlier = saved.as_ref().map_or(0.0, Saved::seconds);
    let mut saver = saver(a, run, earlier);
    let (w, epochs, stopped) = plant::vector::run_from(
        be.as_mut(),
        spec,
        &planted,
        &training,
        resume.as_ref(),
        log_epoch(verbose),
        &mut saver,
    )?;
    settle(saver, stopped, a)?;
    let seconds = earlier + start.elapsed().as_secs_f64();
    let mut report = plant::vector::score(spec, c, &planted, &w, epochs, &info, seconds)?;
    report.peak_device_bytes = be.memory().peak_bytes;
    report.variant = a.variant;
    remove_checkpoint(a)?;
    print(&report, a.json)
}

fn print(report: &plant::PlantReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let outputs = if report.outputs > 1 {
            format!(" C={}", report.outputs)
        } else {
            String::new()
        };
        println!(
            "{} planted network: d={} m={} s={}{outputs} n={} seed={} on {} ({})",
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
