//! `spinr sweep`: run a grid of cells (method × m × s × seed) into a folder, one row per cell
//! in `results.csv`, resumable, and draw the heatmaps; `spinr sweep merge` joins the folders
//! of a sharded sweep. The library side is `crate::sweep`; this module parses flags, reads
//! the Slurm environment, shows progress and handles Ctrl-C.
//!
//! Shards: `--shard I/N` (default: from a Slurm job array) runs every N-th group of cells.
//! Each shard writes its own folder, e.g. `--out runs/camera/shard-$SLURM_ARRAY_TASK_ID`;
//! `spinr sweep merge runs/camera/shard-* --out runs/camera/all` then joins them.

mod cells;

use super::progress;
use crate::error::{Error, Param};
use crate::sweep::{self, CellRunner, Event, Grid, Manifest, Method, Shard, Task};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::PathBuf;

/// The flag of `spinr sweep` that sets each quantity.
pub fn flag(p: Param) -> Option<&'static str> {
    Some(match p {
        Param::Neurons => "--neurons",
        Param::Nonzeros => "--nonzeros",
        Param::Method => "--methods",
        Param::Seed => "--seeds",
        Param::Shard => "--shard",
        Param::Output => "--out",
        _ => return None,
    })
}

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Cells run in canonical order: method (iht, imp, paper), then m, then seed, then \
                  s, each ascending; the cells of one (method, m, seed) form a group that one \
                  shard runs whole. Restarting the same command resumes: finished cells are \
                  skipped. Each shard needs its own --out; join them with `spinr sweep merge`."
)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    /// inr (image fits: PSNR), plant (planted networks: test PSNR) or classify (test accuracy).
    #[arg(long, value_enum, required = true)]
    pub task: Option<Task>,
    /// The image to fit (--task inr).
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// Hidden neurons m, comma separated.
    #[arg(long, value_name = "M,…", value_delimiter = ',', required = true)]
    pub neurons: Vec<usize>,
    /// Nonzero weights s, comma separated.
    #[arg(long, value_name = "S,…", value_delimiter = ',', required = true)]
    pub nonzeros: Vec<usize>,
    /// Methods: iht (spinr's IHT), imp (iterative magnitude pruning), paper (IHT with the
    /// paper's choices).
    #[arg(
        long,
        value_enum,
        value_name = "METHOD,…",
        value_delimiter = ',',
        default_value = "iht"
    )]
    pub methods: Vec<Method>,
    /// Seeds, comma separated.
    #[arg(long, value_name = "K,…", value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Run part I of N (0-based) of the grid. Default: from a Slurm job array
    /// (SLURM_ARRAY_TASK_ID relative to SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT),
    /// else the whole grid. Give each shard its own --out.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// The sweep folder: sweep.json, results.csv, heatmaps, summary.md. Rerunning the same
    /// command into it resumes; a different grid or options is refused.
    #[arg(long, value_name = "DIR", required = true)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub which: super::fit::ImageArgs,
    /// The labelled data of --task classify (as `spinr classify --data`).
    #[arg(long, value_name = "DIR|FILE")]
    pub data: Option<PathBuf>,
    /// binary or multiclass (--task classify); --iters sets the epochs (default: binary 15,
    /// multiclass 50), --batch-size the samples per update.
    #[arg(long, value_enum, default_value = "binary")]
    pub classify_task: crate::classify::ClassTask,
    /// Input dimension d of planted networks (--task plant).
    #[arg(long, value_name = "D", default_value_t = 100)]
    pub inputs: usize,
    /// Training samples n of planted networks (--task plant).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub samples: usize,
    #[command(flatten)]
    pub tuning: super::fit::FitTuning,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Join the folders of a sharded sweep: one results.csv in canonical order, the heatmaps
    /// and summary.md. Refuses folders of different sweeps and overlapping shards that
    /// disagree.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Sweep folders (the shards' --out).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The merged folder.
    #[arg(long, value_name = "MERGED")]
    pub out: PathBuf,
}

/// The shard a Slurm array task runs, from the values of `SLURM_ARRAY_TASK_ID`, `_COUNT`,
/// `_MIN` and `_STEP` (`None`: not an array task). `sbatch --array=0-15` or `--array=1-16`
/// gives shards 0/16 … 15/16; `--array=0-30:2` also does (the step is divided out).
pub fn slurm_shard(
    id: Option<&str>,
    count: Option<&str>,
    min: Option<&str>,
    step: Option<&str>,
) -> Result<Option<Shard>, String> {
    let Some(id) = id else { return Ok(None) };
    let num = |name: &str, v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("{name}={v:?} is not a number"))
    };
    let id = num("SLURM_ARRAY_TASK_ID", id)?;
    let count = match count {
        Some(c) => num("SLURM_ARRAY_TASK_COUNT", c)?,
        None => return Err("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into()),
    };
    let min = min.map_or(Ok(0), |m| num("SLURM_ARRAY_TASK_MIN", m))?;
    let step = step
        .map_or(Ok(1), |s| num("SLURM_ARRAY_TASK_STEP", s))?
        .max(1);
    let offset = id
        .checked_sub(min)
        .ok_or_else(|| format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"))?;
    if offset % step != 0 {
        return Err(format!(
            "SLURM_ARRAY_TASK_ID={id} is not MIN={min} plus a multiple of STEP={step}"
        ));
    }
    Shard::new(offset / step, count)
        .map(Some)
        .map_err(|e| match e {
            Error::Invalid { msg, .. } => format!("array task {id}: {msg}"),
            e => e.to_string(),
        })
}

/// `--shard`, else the Slurm array task's shard, else the whole grid.
fn shard(a: &SweepArgs) -> anyhow::Result<Shard> {
    if let Some(s) = a.shard {
        return Ok(s);
    }
    let var = |name: &str| std::env::var(name).ok();
    let found = slurm_shard(
        var("SLURM_ARRAY_TASK_ID").as_deref(),
        var("SLURM_ARRAY_TASK_COUNT").as_deref(),
        var("SLURM_ARRAY_TASK_MIN").as_deref(),
        var("SLURM_ARRAY_TASK_STEP").as_deref(),
    )
    .map_err(|e| {
        Error::arg(
            "--shard",
            format!("cannot take the shard from Slurm: {e}; pass --shard I/N"),
        )
    })?;
    Ok(found.unwrap_or(Shard::ALL))
}

/// The options that make a sweep's results what they are: recorded in sweep.json, so a
/// restart with other options is refused. Device choices are left out on purpose: a sweep
/// may resume on another machine.
fn options(a: &SweepArgs, task: Task) -> Value {
    let t = &a.tuning;
    let mut o = json!({
        "iters": t.iters,
        "batch_size": t.batch_size.map(|b| b.to_string()),
        "gates": t.gates.as_str(),
        "inner": t.inner,
        "refine": t.refine,
        "first_step": t.first_step,
        "rescue": t.rescue,
    });
    // Recorded only when given, so sweeps begun before the flag existed still resume; a
    // restart that changes one of them is refused instead of mixing two fits in one table.
    if let Value::Object(o) = &mut o {
        let given = [
            ("polish", t.polish.map(|p| json!(p))),
            ("momentum", t.momentum.map(|b| json!(b))),
            ("candidates", t.candidates.map(|c| json!(c))),
            ("grow_from", t.grow_from.map(|g| json!(g))),
            ("colour", t.colour.map(|c| json!(c.as_str()))),
            ("frequencies", t.frequencies.map(|f| json!(f.as_str()))),
            ("time_budget", t.time_budget.map(|b| json!(b))),
            ("dct_share", t.dct_share.map(|f| json!(f))),
        ];
        for (key, value) in given {
            if let Some(v) = value {
                o.insert(key.into(), v);
            }
        }
    }
    let extra = match task {
        Task::Plant => json!({ "inputs": a.inputs, "samples": a.samples }),
        Task::Classify => json!({
            "data": a.data.as_ref().map(|p| p.display().to_string()),
            "classify_task": a.classify_task.as_str(),
        }),
        _ => json!({
            "image": a.image.as_ref().map(|p| p.display().to_string()),
            "index": a.which.index,
            "resize": a.which.resize.map(|r| format!("{r:?}")),
            "features": t.features,
            "sigma": t.sigma,
            "sigma_channel": t.sigma_channel,
            "coords": t.coords.as_str(),
            "plain_features": t.plain_features,
        }),
    };
    if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
        o.extend(extra);
    }
    o
}

/// The runner of each task.
fn runner(task: Task, a: &SweepArgs) -> anyhow::Result<Box<dyn CellRunner>> {
    if let (Task::Plant | Task::Classify, Some(b @ super::fit::BatchSize::Grow(..))) =
        (task, a.tuning.batch_size)
    {
        return Err(Error::arg(
            "--batch-size",
            format!("{b}: growing batches are for image fits (--task inr); give one size"),
        )
        .into());
    }
    if task != Task::Inr && a.tuning.time_budget.is_some() {
        return Err(Error::arg(
            "--time-budget",
            "a time budget is for image fits (--task inr); give --iters",
        )
        .into());
    }
    if task != Task::Inr && a.tuning.dct_share.is_some() {
        return Err(Error::arg(
            "--dct-share",
            "DCT terms are part of image models (--task inr); leave the flag out",
        )
        .into());
    }
    Ok(match task {
        Task::Inr => {
            let Some(image) = a.image.clone() else {
                return Err(Error::arg(
                    "--image",
                    "--task inr needs the image to fit: pass --image IMG (and --index N for an \
                     MNIST IDX file)",
                )
                .into());
            };
            let mut r = cells::InrRunner::new(image, &a.which, a.tuning.clone(), a.device.clone())?;
            r.imp_checkpoints = a.out.clone();
            Box::new(r)
        }
        Task::Plant => {
            let mut tuning = a.tuning.clone();
            tuning.iters = Some(tuning.iters.unwrap_or(crate::plant::DEFAULT_ITERS));
            Box::new(cells::PlantRunner {
                inputs: a.inputs,
                samples: a.samples,
                tuning,
                device: a.device.clone(),
                imp_checkpoints: a.out.clone(),
            })
        }
        Task::Classify => {
            let Some(data) = a.data.clone() else {
                return Err(Error::arg(
                    "--data",
                    "--task classify needs labelled data: pass --data DIR|FILE (as for spinr \
                     classify)",
                )
                .into());
            };
            let t = &a.tuning;
            let options = crate::classify::ClassifyOptions {
                task: a.classify_task,
                epochs: t.iters,
                batch_size: match t.batch_size {
                    Some(super::fit::BatchSize::Samples(b)) => Some(b),
                    _ => None,
                },
                iht: crate::iht::IhtChoices {
                    inner: t.inner,
                    refine: t.refine,
                    first_step: t.first_step,
                    ..Default::default()
                },
                ..Default::default()
            };
            Box::new(cells::ClassifyRunner {
                split: crate::data::load(&data)?,
                data_path: data,
                options,
                device: crate::classify::binary::Device {
                    backend: a.device.backend,
                    adapter: a.device.adapter.clone(),
                },
                imp_checkpoints: a.out.clone(),
            })
        }
    })
}

pub fn run(a: SweepArgs) -> anyhow::Result<()> {
    if let Some(SweepCommand::Merge(m)) = a.command {
        return merge(m);
    }
    let (Some(task), Some(out)) = (a.task, a.out.clone()) else {
        unreachable!("clap requires --task and --out without a subcommand")
    };
    let grid = Grid::new(
        task,
        a.methods.clone(),
        a.neurons.clone(),
        a.nonzeros.clone(),
        a.seeds.clone(),
    )?;
    let shard = shard(&a)?;
    let mut runner = runner(task, &a)?;
    let manifest = Manifest::new(grid, options(&a, task));
    progress::install_interrupt_handler(
        "stopping after this cell (finished cells are in results.csv; rerun to resume)",
    );
    let bar = progress::bar(0, "cells");
    // Without a terminal (a batch job's log) a line per cell replaces the bar.
    let lines = bar.is_hidden() || super::verbose();
    let metric = sweep::Metric::of(task).column;
    let mut observe = |e: Event| {
        match e {
            Event::Start { cells, skipped } => {
                eprintln!(
                    "spinr: sweep {}: {cells} cells in shard {shard} ({skipped} done before)",
                    out.display()
                );
                bar.set_length(cells as u64);
                bar.set_position(skipped as u64);
            }
            Event::Cell {
                cell,
                metric: value,
                done,
                cells,
            } => {
                let v = value.map_or("–".into(), |v| format!("{v:.2}"));
                bar.set_position(done as u64);
                bar.set_message(format!("{cell}: {metric} {v}"));
                if lines {
                    bar.suspend(|| eprintln!("[{done}/{cells}] {cell}: {metric} {v}"));
                }
            }
        }
        if progress::stop_requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = sweep::run(&out, &manifest, shard, runner.as_mut(), &mut observe);
    bar.finish_and_clear();
    let outcome = match result {
        Err(Error::Interrupted) => {
            eprintln!(
                "spinr: stopped; the finished cells are in {}; rerun the same command to resume",
                out.join(sweep::RESULTS_FILE).display()
            );
            return Err(Error::Interrupted.into());
        }
        r => r?,
    };
    println!(
        "sweep {}: {} cells in shard {shard}, {} run now, {} done before",
        out.display(),
        outcome.cells,
        outcome.ran,
        outcome.skipped
    );
    println!("  wrote {}", out.join(sweep::RESULTS_FILE).display());
    for p in &outcome.reports {
        println!("  wrote {}", p.display());
    }
    Ok(())
}

fn merge(m: MergeArgs) -> anyhow::Result<()> {
    let merged = sweep::merge(&m.dirs, &m.out)?;
    println!(
        "merged {} folders into {}: {} of {} cells",
        m.dirs.len(),
        m.out.display(),
        merged.present,
        merged.cells
    );
    if merged.present < merged.cells {
        eprintln!(
            "spinr: warning: {} cells are in none of the folders (a shard not run or not \
             finished?); their heatmap cells are blank",
            merged.cells - merged.present
        );
    }
    println!("  wrote {}", m.out.join(sweep::RESULTS_FILE).display());
    for p in &merged.reports {
        println!("  wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(i: usize, n: usize) -> Option<Shard> {
        Some(Shard::new(i, n).unwrap())
    }

    #[test]
    fn slurm_array_tasks_map_to_shards() {
        assert_eq!(slurm_shard(None, Some("16"), Some("0"), None), Ok(None));
        // sbatch --array=0-15
        assert_eq!(
            slurm_shard(Some("0"), Some("16"), Some("0"), None),
            Ok(s(0, 16))
        );
        assert_eq!(
            slurm_shard(Some("15"), Some("16"), Some("0"), Some("1")),
            Ok(s(15, 16))
        );
        // sbatch --array=1-16: the index counts from MIN.
        assert_eq!(
            slurm_shard(Some("1"), Some("16"), Some("1"), None),
            Ok(s(0, 16))
        );
        assert_eq!(
            slurm_shard(Some("16"), Some("16"), Some("1"), None),
            Ok(s(15, 16))
        );
        // sbatch --array=0-30:2
        assert_eq!(
            slurm_shard(Some("30"), Some("16"), Some("0"), Some("2")),
            Ok(s(15, 16))
        );
        // No MIN: the ids are taken to start at 0.
        assert_eq!(slurm_shard(Some("3"), Some("4"), None, None), Ok(s(3, 4)));
    }

    #[test]
    fn bad_slurm_values_are_explained() {
        let e = slurm_shard(Some("16"), Some("16"), Some("0"), None).unwrap_err();
        assert!(e.contains("16"), "{e}");
        let e = slurm_shard(Some("2"), None, None, None).unwrap_err();
        assert!(e.contains("SLURM_ARRAY_TASK_COUNT"), "{e}");
        let e = slurm_shard(Some("x"), Some("4"), None, None).unwrap_err();
        assert!(e.contains("SLURM_ARRAY_TASK_ID"), "{e}");
        let e = slurm_shard(Some("0"), Some("4"), Some("1"), None).unwrap_err();
        assert!(e.contains("below"), "{e}");
        let e = slurm_shard(Some("3"), Some("4"), Some("0"), Some("2")).unwrap_err();
        assert!(e.contains("STEP"), "{e}");
    }
}
