//! `spinr fit`: fit an image as a sparse ReLU network (implicit neural representation).
//!
//! The CLI parses flags into [`FitOptions`](crate::inr::fit::FitOptions), prints and saves; the fit itself is
//! `crate::inr::fit`. Messages and the progress bar go to stderr, results to stdout. Every
//! output file is written atomically; Ctrl-C stops after the current epoch and still writes
//! the best model so far, and a checkpoint that `--resume` continues from
//! ([`checkpoints`]).

mod args;
pub mod checkpoints;
mod planes;

pub use args::*;

use super::progress;
use crate::backend;
use crate::error::Error;
use crate::iht::{EpochReport, Variant};
use crate::inr::fit::{self as inr_fit, FitPlan, FitReport, ImageFit, Method};
use crate::inr::planes::Colour;
use crate::inr::Image;
use crate::model;
use checkpoints::{ImageRun, ImpSaver, Saved, Saver, CHECKPOINT_FILE};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn write_report(dir: &Path, report: &FitReport) -> crate::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).expect("report serialises");
    json.push(b'\n');
    crate::output::write_bytes(&dir.join(REPORT_FILE), &json)
}

/// Refuses to clobber an earlier fit (before spending any time) and creates the folder. A
/// resumed fit writes into its own folder.
fn prepare_out_dir(a: &FitArgs, job: &Job) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &a.resume {
        if a.out.as_ref().is_some_and(|o| o != dir) {
            return Err(Error::arg(
                "--out",
                "a resumed fit writes into the folder it resumes (--resume DIR); drop --out",
            )
            .into());
        }
        return Ok(dir.clone());
    }
    let out_dir = a
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&job.path, job.run.index));
    if !a.force {
        let mut outputs: Vec<PathBuf> = [
            MODEL_FILE,
            RECONSTRUCTION_FILE,
            REPORT_FILE,
            CHECKPOINT_FILE,
        ]
        .iter()
        .map(|f| out_dir.join(f))
        .collect();
        outputs.extend(planes::plane_files(&out_dir));
        if let Some(f) = outputs.iter().find(|f| f.exists()) {
            return Err(Error::arg(
                "--force",
                format!(
                    "{} already exists (outputs of an earlier fit); pass --force to overwrite \
                     them, --out to write elsewhere, or --resume {} to continue a stopped fit",
                    f.display(),
                    out_dir.display()
                ),
            )
            .into());
        }
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::Io {
        path: out_dir.clone(),
        msg: format!("cannot create the output folder: {e} (choose another with --out)"),
    })?;
    Ok(out_dir)
}

/// The fit to run, resolved from the flags or from the checkpoint it resumes.
struct Job {
    /// The image file.
    path: PathBuf,
    run: ImageRun,
    resume: Option<Saved>,
    memory: MemoryPlan,
}

/// What the fit may hold, decided before anything large is allocated.
#[derive(Clone, Copy)]
struct MemoryPlan {
    /// The CPU backend's feature cache: the default, or none if the budget cannot hold it.
    cpu_feature_cache: u64,
    /// The GPU backend's budget.
    device_budget: u64,
}

/// Refuses a fit whose host memory would exceed the budget (`--max-memory`, else what the
/// machine has available), and drops the CPU feature cache where only that does not fit.
fn plan_memory(plan: &FitPlan, max_memory: Option<u64>) -> anyhow::Result<MemoryPlan> {
    let budget = super::memory_budget(max_memory);
    plan.host_memory(0).check(
        "this fit",
        &budget,
        "fit fewer pixels (--resize), or raise --max-memory",
    )?;
    let cached = plan.host_memory(backend::DEFAULT_FEATURE_CACHE);
    let cpu_feature_cache = if cached.total() <= budget.bytes {
        backend::DEFAULT_FEATURE_CACHE
    } else {
        0
    };
    Ok(MemoryPlan {
        cpu_feature_cache,
        device_budget: max_memory.unwrap_or(u64::MAX),
    })
}

pub fn run(a: FitArgs) -> anyhow::Result<()> {
    progress::install_interrupt_handler(
        "stopping at the next update and saving a checkpoint and the best model so far",
    );
    if !(a.checkpoint_every.is_finite() && a.checkpoint_every >= 0.0) {
        return Err(Error::arg("--checkpoint-every", "must be a number of seconds ≥ 0").into());
    }
    let ignored = a.tuning.iht_flags();
    if a.method == Method::Imp && !ignored.is_empty() {
        return Err(Error::arg(
            "--method",
            format!(
                "{} tune IHT, and IMP would ignore them: drop them, or fit with --method iht",
                ignored.join(", ")
            ),
        )
        .into());
    }
    let resume = a.resume.as_deref().map(checkpoints::load).transpose()?;
    let (path, which) = match (&a.image, &resume) {
        (Some(p), _) => (p.clone(), a.which.clone()),
        (None, Some((_, r))) => (r.image.clone(), r.which()),
        (None, None) => {
            return Err(Error::arg("IMAGE", "give the image to fit (or --resume DIR)").into())
        }
    };
    let image = which.load(&path)?;
    let options = match (&a.image, &resume) {
        (None, Some((_, r))) => r.options.clone(),
        _ => a.tuning.options(
            a.method,
            a.variant,
            a.neurons
                .unwrap_or_else(|| inr_fit::default_neurons(a.method, a.variant, a.nonzeros)),
            a.nonzeros,
            a.seed,
            image.channels,
        ),
    };
    if options.colour_for(&image)? == Some(Colour::LumaChroma) {
        return planes::run(&a, path, which, image, options, resume);
    }
    let plan = options.plan(&image)?;
    let run = ImageRun::new(&path, &which, &image, &options);
    let (job, out_dir) = start_job(&a, path, run, resume, &plan)?;
    let fit = match plan.method {
        Method::Iht => {
            let path = out_dir.join(MODEL_FILE);
            let save_best =
                |m: &crate::inr::ImageModel| model::save(m, &path).map(|()| path.clone());
            let stage = Stage {
                resume: job.resume.as_ref(),
                earlier: job.resume.as_ref().map_or(0.0, Saved::seconds),
                saver_earlier: job.resume.as_ref().map_or(0.0, Saved::seconds),
                run: checkpoints::describe(&job.run),
                report: &|info: &backend::BackendInfo| {
                    FitReport::start(
                        &job.path.display().to_string(),
                        &plan,
                        info,
                        &out_dir.display().to_string(),
                    )
                },
                save_best: &save_best,
            };
            fit_iht(&a, &job, &image, &plan, &out_dir, stage)?
        }
        Method::Imp => fit_imp(&a, &job, &image, &plan, &out_dir)?,
    };
    save_and_print(&a, &job, &image, &plan, &out_dir, fit)
}

/// The job of a fit whose run is `run`: refuses a resume of another fit, plans the memory for
/// `plan` (a colour fit's largest plane) and prepares the output folder.
fn start_job(
    a: &FitArgs,
    path: PathBuf,
    run: ImageRun,
    resume: Option<(Saved, ImageRun)>,
    plan: &FitPlan,
) -> anyhow::Result<(Job, PathBuf)> {
    if let (Some(dir), Some((_, saved))) = (&a.resume, &resume) {
        checkpoints::check(dir, saved, &run)?;
    }
    let job = Job {
        path,
        run,
        resume: resume.map(|(c, _)| c),
        memory: plan_memory(plan, a.max_memory)?,
    };
    let out_dir = prepare_out_dir(a, &job)?;
    Ok((job, out_dir))
}

/// Announces the fit on stderr.
fn announce(a: &FitArgs, job: &Job, image: &Image, plan: &FitPlan, info: &backend::BackendInfo) {
    a.device.announce(info);
    // Said when the default rule moved m off 50 (as σ says when it was read off); a resume
    // without the image takes the checkpoint's m, whichever way it was chosen.
    let by_rule = a.image.is_some() && a.neurons.is_none();
    let m_rule = if by_rule && plan.spec.neurons != inr_fit::DEFAULT_NEURONS {
        format!(" (one per {} nonzeros)", inr_fit::NONZEROS_PER_NEURON)
    } else {
        String::new()
    };
    eprintln!(
        "spinr: fitting {} ({}×{} {}, {} samples): {} m={}{} s={}{} d={} σ={} ({} coords{}){} on {} ({}), {}",
        job.path.display(),
        image.height,
        image.width,
        image.kind(),
        image.data.len(),
        if plan.variant == Variant::Paper {
            format!("{} (paper variant)", plan.method.as_str())
        } else {
            plan.method.as_str().to_string()
        },
        plan.spec.neurons,
        m_rule,
        plan.cfg.s + plan.dct_terms,
        terms_text(plan.cfg.s, plan.dct_terms),
        plan.spec.features,
        sigma_text(&plan.spec.sigma),
        plan.spec.coords.as_str(),
        if plan.sigma_auto {
            ", read off the image"
        } else {
            ""
        },
        frequency_text(plan),
        info.kind,
        info.adapter,
        batch_text(plan)
    );
}

/// How `s` splits between the network's weights and DCT terms, as the start-up lines print it.
fn terms_text(weights: usize, terms: usize) -> String {
    if terms == 0 {
        String::new()
    } else {
        format!(" ({weights} weights + {terms} DCT terms)")
    }
}

/// How many frequencies came from the image's spectrum, as the start-up lines print it.
fn frequency_text(plan: &FitPlan) -> String {
    let rows = plan.spec.image_frequencies.len() / plan.spec.sigma.len().max(1);
    if rows == 0 {
        String::new()
    } else {
        format!(
            ", {rows} of {} frequencies from its spectrum",
            plan.spec.features / 2
        )
    }
}

/// σ per axis as the start-up lines print it.
fn sigma_text(sigma: &[f64]) -> String {
    sigma
        .iter()
        .map(|s| {
            format!("{:.3}", s)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How the fit batches its updates, as the start-up lines print it.
fn batch_text(plan: &FitPlan) -> String {
    let batches = match (plan.batch_size, plan.cfg.batch_end) {
        (None, _) => "full batch".to_string(),
        (Some(a), Some(b)) if a != b => format!("minibatches growing from {a} to {b}"),
        (Some(b), _) => format!("minibatches of {b}"),
    };
    let mut parts = vec![batches];
    let (cfg, pool) = (&plan.cfg, plan.capacity());
    if pool > cfg.s {
        parts.push(format!("{pool} candidates per update"));
    }
    let first = cfg.support_at(0);
    if first < cfg.s {
        let ramp = (0..cfg.iters)
            .find(|&e| cfg.support_at(e) == cfg.s)
            .unwrap_or(cfg.iters);
        parts.push(format!(
            "the support growing from {first} to {} nonzeros in {ramp} epochs",
            cfg.s
        ));
    }
    if let Some(b) = cfg.time_budget {
        parts.push(format!(
            "epochs re-planned as they go to fit a time budget of {b:.1} s"
        ));
    }
    parts.join(", ")
}

/// Keeps report.json current and the progress bar moving.
struct Progress {
    bar: indicatif::ProgressBar,
    verbose: bool,
    start: Instant,
    /// Fitting time of the runs this one resumes.
    earlier_seconds: f64,
    last_write: Option<Instant>,
    best: f64,
    write_error: Option<crate::Error>,
}

impl Progress {
    /// Progress of a fit of `epochs`, resumed after `history` (the losses of the epochs run
    /// before) and `earlier_seconds`.
    fn new(epochs: usize, n: usize, history: &[f64], earlier_seconds: f64) -> Self {
        let bar = progress::bar(epochs as u64, "epochs");
        bar.set_position(history.len() as u64);
        Self {
            bar,
            verbose: super::verbose(),
            start: Instant::now(),
            earlier_seconds,
            last_write: None,
            best: history
                .iter()
                .map(|l| inr_fit::psnr(l / n as f64))
                .fold(f64::NEG_INFINITY, f64::max),
            write_error: None,
        }
    }

    fn epoch(
        &mut self,
        r: &EpochReport,
        report: &mut FitReport,
        out_dir: &Path,
    ) -> ControlFlow<()> {
        let p = inr_fit::psnr(r.mse());
        self.best = self.best.max(p);
        // A time budget re-plans the count as it goes.
        self.bar.set_length(r.epochs as u64);
        self.bar.set_position(r.epoch as u64 + 1);
        self.bar
            .set_message(format!("PSNR {p:.2} dB (best {:.2})", self.best));
        if self.verbose {
            let t = self.start.elapsed().as_secs_f64();
            self.bar.suspend(|| {
                eprintln!(
                    "epoch {:4}  {t:8.2} s  loss {:.6e}  PSNR {p:.2} dB",
                    r.epoch, r.loss
                )
            });
        }
        // Keep report.json current, without letting small epochs turn into disk traffic.
        if self
            .last_write
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            report.iterations = r.epoch + 1;
            report.psnr = self.best;
            report.seconds = self.earlier_seconds + self.start.elapsed().as_secs_f64();
            if let Err(e) = write_report(out_dir, report) {
                self.write_error = Some(e);
                return ControlFlow::Break(());
            }
            self.last_write = Some(Instant::now());
        }
        // An IHT fit stops in its checkpointer (after saving), at the next pause.
        ControlFlow::Continue(())
    }
}

/// One IHT fit of the CLI: the whole image, or one plane of a luma-chroma fit.
struct Stage<'a> {
    /// The checkpoint this fit continues, if any.
    resume: Option<&'a Saved>,
    /// Fitting time of this fit before `resume`.
    earlier: f64,
    /// Fitting time the checkpoints count before this fit (a plane's: the earlier planes' too).
    saver_earlier: f64,
    /// What checkpoints record of the run.
    run: serde_json::Value,
    /// report.json while the fit runs, on the backend it runs on.
    report: &'a dyn Fn(&backend::BackendInfo) -> FitReport,
    /// Writes the best model of the last checkpoint where a fit failed at run time.
    save_best: &'a dyn Fn(&crate::inr::ImageModel) -> crate::Result<PathBuf>,
}

fn fit_iht(
    a: &FitArgs,
    job: &Job,
    image: &Image,
    plan: &FitPlan,
    out_dir: &Path,
    stage: Stage,
) -> anyhow::Result<ImageFit> {
    let problem = plan.problem(image)?;
    let mut be = backend::create_with(
        a.device.backend,
        a.device.adapter.as_deref(),
        problem.clone(),
        plan.capacity(),
        crate::backend::gpu::GpuOptions {
            device_budget: job.memory.device_budget,
            ..super::gpu_options(plan.minibatch())
        },
        job.memory.cpu_feature_cache,
    )?;
    let info = be.info();
    let mut report = (stage.report)(&info);
    if job.run.planes_done.is_none() {
        announce(a, job, image, plan, &info);
    } else if let Some(done) = &job.run.planes_done {
        planes::announce_plane(a, done.len(), plan, &info);
    }
    let resume = stage.resume.and_then(Saved::iht_resume);
    if let Some(r) = &resume {
        eprintln!(
            "spinr: resuming at epoch {} (update {} of it) from {}",
            r.at.epoch,
            r.at.batch,
            out_dir.join(CHECKPOINT_FILE).display()
        );
    }
    let mut saver = Saver::new(
        out_dir.join(CHECKPOINT_FILE),
        stage.run,
        Duration::from_secs_f64(a.checkpoint_every),
        stage.saver_earlier,
        progress::stop_requested,
    );
    let history = resume.as_ref().map_or(&[][..], |r| &r.at.history[..]);
    // A resumed fit with a time budget has what the runs before it left of the budget.
    let budgeted;
    let plan = match (plan.cfg.time_budget, &resume) {
        (Some(b), Some(r)) => {
            let mut p = plan.clone();
            p.cfg.time_budget = Some((b - stage.earlier).max(f64::MIN_POSITIVE));
            p.cfg.iters = r.at.planned.unwrap_or(p.cfg.iters);
            budgeted = p;
            &budgeted
        }
        _ => plan,
    };
    let mut progress = Progress::new(plan.cfg.iters, image.data.len(), history, stage.earlier);
    let result = inr_fit::fit_iht_from(
        image,
        plan,
        &problem,
        be.as_backend(),
        resume.as_ref(),
        |r| progress.epoch(r, &mut report, out_dir),
        &mut saver,
    );
    progress.bar.finish_and_clear();
    let mut fit = match result {
        Ok(fit) => fit,
        Err(e) => {
            return Err(salvage(
                e,
                stage.resume,
                plan,
                &saver,
                out_dir,
                stage.save_best,
            ))
        }
    };
    super::print_dispatch_profile(be.as_ref());
    if let Some(e) = progress.write_error.or(saver.error) {
        return Err(e.into());
    }
    fit.seconds += stage.earlier;
    Ok(fit)
}

/// A fit that failed at run time (a GPU out of memory, a lost device): the best model of the
/// last checkpoint still goes to `model.safetensors` (`save_best`), and the error says how to
/// go on.
fn salvage(
    e: Error,
    resumed: Option<&Saved>,
    plan: &FitPlan,
    saver: &Saver,
    out_dir: &Path,
    save_best: &dyn Fn(&crate::inr::ImageModel) -> crate::Result<PathBuf>,
) -> anyhow::Error {
    let last = saver
        .saved
        .as_ref()
        .map(|(at, st)| (at, st))
        .or(match resumed {
            Some(Saved::Iht(c)) => Some((&c.at, &c.state)),
            _ => None,
        });
    // Bad input is reported as such (its flag named); only a failure at run time salvages.
    let Some((at, state)) = last.filter(|(at, _)| at.best_loss.is_some() && !e.is_bad_input())
    else {
        return e.into();
    };
    let model = crate::inr::ImageModel {
        spec: plan.spec.clone(),
        height: plan.height,
        width: plan.width,
        channels: plan.channels,
        gating: state.counters.best_gating,
        w: state.best.clone(),
        output: None,
        dct: Default::default(),
    };
    let saved = match save_best(&model) {
        Ok(path) => format!(
            "the best model of the last checkpoint (after {} epochs) is in {}",
            at.epoch,
            path.display()
        ),
        Err(w) => format!("the best model could not be saved either ({w})"),
    };
    anyhow::Error::from(e).context(format!(
        "the fit failed; {saved}; `spinr fit --resume {}` continues from the checkpoint (add \
         --backend cpu to finish on the CPU)",
        out_dir.display()
    ))
}

fn fit_imp(
    a: &FitArgs,
    job: &Job,
    image: &Image,
    plan: &FitPlan,
    out_dir: &Path,
) -> anyhow::Result<ImageFit> {
    let problem = plan.problem(image)?;
    let device = crate::imp::ImpDevice::from_choice(a.device.backend, a.device.adapter.as_deref())?;
    let info = device.info();
    announce(a, job, image, plan, &info);
    let opts = inr_fit::imp_options(plan);
    let total = plan.spec.neurons * (plan.spec.features + 1);
    let rounds = crate::imp::prune::rounds(total, opts.nonzeros, opts.prune_fraction);
    let bar = progress::bar(rounds as u64, "rounds");
    let verbose = super::verbose();
    let stop = || {
        if progress::stop_requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    // IMP's state between rounds is small (the masks): saved at every round boundary.
    let resume = job.resume.as_ref().and_then(Saved::imp_resume);
    let earlier = job.resume.as_ref().map_or(0.0, Saved::seconds);
    if let Some(r) = &resume {
        eprintln!(
            "spinr: resuming at round {} from {}",
            r.round,
            out_dir.join(CHECKPOINT_FILE).display()
        );
        bar.set_position(r.round as u64);
    }
    let saver = ImpSaver::new(
        Some(out_dir.join(CHECKPOINT_FILE)),
        checkpoints::describe(&job.run),
        earlier,
    );
    let mut fit = inr_fit::fit_imp_from(
        image,
        plan,
        &problem,
        &device,
        resume,
        |_| stop(),
        |r| {
            bar.set_position(r.round as u64 + 1);
            bar.set_message(format!("{} weights, loss {:.4e}", r.nonzeros, r.loss));
            if verbose {
                bar.suspend(|| {
                    eprintln!(
                        "round {:3}  {:8} weights  loss {:.6e}",
                        r.round, r.nonzeros, r.loss
                    )
                });
            }
            stop()
        },
        |boundary| saver.save(boundary, serde_json::Value::Null),
    )?;
    bar.finish_and_clear();
    fit.seconds += earlier;
    Ok(fit)
}

/// Writes the model, the reconstruction and the final report, and prints the summary.
fn save_and_print(
    a: &FitArgs,
    job: &Job,
    image: &Image,
    plan: &FitPlan,
    out_dir: &Path,
    fit: ImageFit,
) -> anyhow::Result<()> {
    let model_path = out_dir.join(MODEL_FILE);
    model::save(&fit.model, &model_path)?;
    fit.recon.save_png(&out_dir.join(RECONSTRUCTION_FILE))?;
    let model_bytes = file_size(&model_path)?;
    let mut report = FitReport::start(
        &job.path.display().to_string(),
        plan,
        &fit.backend,
        &out_dir.display().to_string(),
    );
    report.finish(image, &fit, Some(model_bytes))?;
    print_and_finish(a, job, image, out_dir, &report, model_bytes)
}

fn file_size(path: &Path) -> crate::Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
}

/// Writes the final report, prints the summary, and removes the checkpoint of a finished fit
/// (a stopped one keeps it and exits as interrupted).
fn print_and_finish(
    a: &FitArgs,
    job: &Job,
    image: &Image,
    out_dir: &Path,
    report: &FitReport,
    model_bytes: u64,
) -> anyhow::Result<()> {
    write_report(out_dir, report)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let (planes, epochs) = match &report.planes {
            Some(p) => (
                format!(
                    " in planes ({})",
                    p.iter()
                        .map(|p| {
                            format!(
                                "{} s={}{} m={}",
                                p.plane,
                                p.nonzeros,
                                terms_text(p.nonzeros - p.dct_terms, p.dct_terms),
                                p.neurons
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                p.iter()
                    .map(|p| p.iterations.to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
            ),
            None => (String::new(), report.iterations.to_string()),
        };
        println!(
            "{}: {}×{} {}, m={} s={}{} d={}{planes}: {epochs} epochs in {:.1} s on {} ({})",
            job.path.display(),
            image.height,
            image.width,
            image.kind(),
            report.neurons,
            report.nonzeros,
            if report.planes.is_some() {
                String::new()
            } else {
                terms_text(report.nonzeros - report.dct_terms, report.dct_terms)
            },
            report.features,
            report.seconds,
            report.backend,
            report.adapter
        );
        let ssim = report.ssim.map_or_else(
            || "n/a (a side under 2 pixels)".to_string(),
            |s| format!("{s:.4}"),
        );
        println!(
            "  PSNR {:.2} dB (8-bit PNG {:.2} dB), SSIM {ssim}, model {} bytes = {:.3} bits/pixel",
            report.psnr,
            report.psnr_8bit.unwrap_or(0.0),
            model_bytes,
            report.bits_per_pixel.unwrap_or(0.0)
        );
        // A colour fit in planes also names the DCT in those planes: the harder yardstick.
        let in_planes = report.dct_planes_psnr.map_or(String::new(), |p| {
            format!(", {p:.2} dB in the luma and chroma planes this fit uses")
        });
        println!(
            "  yardstick: the best {}-term DCT of the image gives {:.2} dB{in_planes}",
            report.nonzeros,
            report.dct_psnr.unwrap_or(0.0)
        );
        for f in [MODEL_FILE, RECONSTRUCTION_FILE, REPORT_FILE] {
            println!("  wrote {}", out_dir.join(f).display());
        }
    }
    let checkpoint = out_dir.join(CHECKPOINT_FILE);
    if report.stopped {
        let resume = if checkpoint.exists() {
            format!("; `spinr fit --resume {}` continues it", out_dir.display())
        } else {
            String::new()
        };
        eprintln!(
            "spinr: stopped after {} epochs; the best model so far is in {}{resume}",
            report.iterations,
            out_dir.display()
        );
        return Err(Error::Interrupted.into());
    }
    // Finished: nothing left to resume.
    let mut leftovers = vec![checkpoint];
    if report.planes.is_some() {
        leftovers.extend(planes::plane_files(out_dir));
    }
    for f in leftovers.iter().filter(|f| f.exists()) {
        std::fs::remove_file(f).map_err(|e| Error::Io {
            path: f.clone(),
            msg: format!("cannot remove the finished fit's {}: {e}", f.display()),
        })?;
    }
    Ok(())
}
