//! `spinr fit`: fit an image as a sparse ReLU network (implicit neural representation).
//!
//! The CLI parses flags into [`FitOptions`], prints and saves; the fit itself is
//! `crate::inr::fit`. Messages and the progress bar go to stderr, results to stdout. Every
//! output file is written atomically; Ctrl-C stops after the current epoch and still writes
//! the best model so far, and a checkpoint that `--resume` continues from
//! ([`checkpoints`]).

pub mod checkpoints;

use super::{progress, DeviceArgs};
use checkpoints::{ImageRun, Saver, CHECKPOINT_FILE};
use crate::backend;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Param};
use crate::iht::{EpochReport, FirstStep, IhtChoices, Refine, Resume, Variant};
use crate::inr::fit::{
    self as inr_fit, BatchChoice, FitOptions, FitPlan, FitReport, ImageFit, Method,
};
use crate::inr::{image as img, Coords, Image};
use crate::model;
use crate::problem::GateMode;
use clap::Args;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The output files, all inside `--out`.
pub const MODEL_FILE: &str = "model.safetensors";
pub const RECONSTRUCTION_FILE: &str = "reconstruction.png";
pub const REPORT_FILE: &str = "report.json";

/// The flag of `spinr fit` that sets each quantity.
pub fn flag(p: Param) -> Option<&'static str> {
    Some(match p {
        Param::Samples | Param::Size => "--resize",
        Param::Inputs => "--features",
        Param::Neurons => "--neurons",
        Param::Nonzeros => "--nonzeros",
        Param::BatchSize => "--batch-size",
        Param::Iters => "--iters",
        Param::Inner => "--inner",
        Param::Sigma => "--sigma",
        Param::Gates => "--gates",
        Param::Index => "--index",
        Param::Method => "--method",
        _ => return None,
    })
}

/// The fit flags that do not name one cell of a sweep (shared with `spinr sweep`).
#[derive(Args, Debug, Clone)]
pub struct FitTuning {
    /// Fourier features d (even: sin and cos pairs).
    #[arg(long, short = 'd', value_name = "D", default_value_t = inr_fit::DEFAULT_FEATURES)]
    pub features: usize,
    /// Frequency standard deviation of the spatial axes: one value, or rows,cols. With unit
    /// coordinates in cycles per image along the longer side (default 20, at most a third of
    /// the longer side in pixels), with pixel coordinates in cycles per pixel (default 2).
    #[arg(long, value_name = "σ", value_delimiter = ',', num_args = 1)]
    pub sigma: Vec<f64>,
    /// Frequency standard deviation of the channel axis (integer coordinates 0, 1, 2).
    #[arg(long, value_name = "σ", default_value_t = inr_fit::DEFAULT_SIGMA_CHANNEL)]
    pub sigma_channel: f64,
    /// unit: pixel centres in (0,1), renders at any size; pixel: the paper's integer indices.
    #[arg(long, value_enum, default_value = "unit")]
    pub coords: Coords,
    /// Draw all frequencies at random as the paper does (no constant feature).
    #[arg(long)]
    pub plain_features: bool,
    /// Epochs (full passes over the samples): default 30 for images; in `spinr sweep`, 100 for
    /// planted networks and 15 / 50 for binary / multiclass classifiers.
    #[arg(long, value_name = "T")]
    pub iters: Option<usize>,
    /// Samples (pixel-channels) per IHT update, or "full". Default: full batch up to 8192
    /// samples, above that n/64 clamped to 2048..65536 (the paper's variant: full batch).
    #[arg(long, value_name = "B|full")]
    pub batch_size: Option<BatchSize>,
    /// sequential (the paper's ReLU network) or convex (fixed random gates).
    #[arg(long, value_enum, default_value = "sequential")]
    pub gates: GateMode,
    /// Refinement steps K per IHT step (default 10, 3 with minibatches; the paper's variant: 10).
    #[arg(long, value_name = "K")]
    pub inner: Option<usize>,
    /// Step size of the first step: paper (μ = 1e-14, the default) or normalized.
    #[arg(long, value_enum)]
    pub first_step: Option<FirstStep>,
    /// Refinement step size: armijo (the normalised step once, then halved: the default and the
    /// paper's) or exact (the normalised step recomputed at every inner step).
    #[arg(long, value_enum)]
    pub refine: Option<Refine>,
    /// Every 5 epochs re-seed a neuron around samples no neuron reaches (true, the default for
    /// full-batch fits; false for minibatches and the paper's variant).
    #[arg(long, value_name = "true|false")]
    pub rescue: Option<bool>,
    /// Rounds of 20 conjugate-gradient steps on the final support after the last epoch, gates
    /// updated between rounds (full batch, ReLU gating; default 3, the paper's variant 0).
    #[arg(long, value_name = "R")]
    pub polish: Option<usize>,
}

impl FitTuning {
    /// The library options of one fit with these flags.
    pub fn options(
        &self,
        method: Method,
        variant: Variant,
        neurons: usize,
        nonzeros: usize,
        seed: u64,
    ) -> FitOptions {
        FitOptions {
            method,
            variant,
            neurons,
            nonzeros,
            features: self.features,
            sigma: self.sigma.clone(),
            sigma_channel: self.sigma_channel,
            coords: self.coords,
            constant_feature: self.plain_features.then_some(false),
            iters: self.iters.unwrap_or(inr_fit::DEFAULT_ITERS),
            batch: match self.batch_size {
                None => BatchChoice::Auto,
                Some(BatchSize::Full) => BatchChoice::Full,
                Some(BatchSize::Samples(b)) => BatchChoice::Samples(b),
            },
            gates: self.gates,
            iht: IhtChoices {
                inner: self.inner,
                refine: self.refine,
                first_step: self.first_step,
                rescue: self.rescue,
                polish: self.polish,
            },
            seed,
        }
    }
}

/// Which image to fit (shared with `spinr sweep`).
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Which image of an MNIST IDX file to fit.
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,
    /// Fit a resampled copy: N = longer side in pixels (aspect kept), or WxH. A unit-coordinate
    /// model still renders at any size (`spinr render --width`).
    #[arg(long, value_name = "N|WxH")]
    pub resize: Option<Resize>,
}

impl ImageArgs {
    /// Loads the image (or digit) and resamples it if asked.
    pub fn load(&self, path: &Path) -> anyhow::Result<Image> {
        let mut image = img::load(path, self.index)?;
        if let Some(r) = self.resize {
            let (nh, nw) = r.apply(image.height, image.width);
            // Its Param::Size error names --resize (`flag`).
            img::check_pixels(nh, nw)?;
            if (nh, nw) != (image.height, image.width) {
                eprintln!(
                    "spinr: resampling {}×{} to {nw}×{nh} (--resize)",
                    image.width, image.height
                );
                image = image.resized(nh, nw);
            }
        }
        Ok(image)
    }
}

#[derive(Args, Debug)]
pub struct FitArgs {
    /// The image to fit: PNG, JPEG, TIFF, BMP, GIF, WebP (gray or colour, 8 or 16 bit) or an
    /// MNIST IDX file (*.idx3-ubyte[.gz], see --index). With --resume: optional (the
    /// checkpoint's), and if given it must be the same image with the same options.
    #[arg(required_unless_present = "resume")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub which: ImageArgs,
    /// Hidden neurons m.
    #[arg(long, short = 'm', value_name = "M", default_value_t = inr_fit::DEFAULT_NEURONS)]
    pub neurons: usize,
    /// Nonzero weights s: the size of the model.
    #[arg(long, short = 's', value_name = "S", default_value_t = inr_fit::DEFAULT_NONZEROS)]
    pub nonzeros: usize,
    /// iht (iterative hard thresholding, memory linear in s) or imp (iterative magnitude
    /// pruning of the dense network, the paper's baseline).
    #[arg(long, value_enum, default_value = "iht")]
    pub method: Method,
    /// spinr (defaults chosen by sweeps) or paper (the paper's code's choices: Armijo
    /// refinement, no constant feature, K = 10, full batch).
    #[arg(long, value_enum, default_value = "spinr")]
    pub variant: Variant,
    /// Seed of the Fourier features (the gate seed is derived from it) and minibatch order.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub tuning: FitTuning,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output folder (default: beside the image, IMAGE-STEM.spinr-out).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite the outputs of an earlier fit.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Save a checkpoint (DIR/checkpoint.safetensors) every this many seconds of fitting, and
    /// always when interrupted (Ctrl-C, SIGTERM, SIGHUP); 0 = after every update.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub checkpoint_every: f64,
    /// Continue the stopped fit whose output folder is DIR from its checkpoint (IHT fits). A
    /// resumed CPU fit ends exactly as an uninterrupted one would. Without IMAGE the
    /// checkpoint's image and options are used (only --backend, --adapter, --json and
    /// --checkpoint-every are taken from the command line); with IMAGE, the image and every
    /// option must be the checkpoint's.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

/// `--batch-size`: a number of samples or the full batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Full,
    Samples(usize),
}

impl std::str::FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(BatchSize::Full),
            _ => match s.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "{s:?} is not a positive number of samples or \"full\""
                )),
                Ok(b) => Ok(BatchSize::Samples(b)),
            },
        }
    }
}

/// `--resize`: the longer side, or both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    Long(usize),
    Exact { width: usize, height: usize },
}

impl Resize {
    /// (height, width) for an image of `h × w`.
    pub fn apply(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Resize::Exact { width, height } => (height, width),
            Resize::Long(n) => {
                let long = h.max(w) as f64;
                let f = |x: usize| ((x as f64 * n as f64 / long).round() as usize).max(1);
                (f(h), f(w))
            }
        }
    }
}

impl std::str::FromStr for Resize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a size: give N (the longer side) or WxH, e.g. 256 or 320x240");
        let pos = |t: &str| t.trim().parse::<usize>().ok().filter(|&v| v > 0);
        match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok(Resize::Exact {
                width: pos(w).ok_or_else(bad)?,
                height: pos(h).ok_or_else(bad)?,
            }),
            None => Ok(Resize::Long(pos(s).ok_or_else(bad)?)),
        }
    }
}

/// The default output folder: beside the image, named after it.
pub fn default_out_dir(image: &Path, index: Option<usize>) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = if crate::data::idx::is_idx(image, 3) {
        let base = name.strip_suffix(".gz").unwrap_or(&name);
        format!("{base}-{}", index.unwrap_or(0))
    } else {
        Path::new(&name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(name.clone())
    };
    image.with_file_name(format!("{stem}.spinr-out"))
}

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
        let outputs = [MODEL_FILE, RECONSTRUCTION_FILE, REPORT_FILE, CHECKPOINT_FILE];
        if let Some(f) = outputs.iter().find(|f| out_dir.join(f).exists()) {
            return Err(Error::arg(
                "--force",
                format!(
                    "{} already exists (outputs of an earlier fit); pass --force to overwrite \
                     them, --out to write elsewhere, or --resume {} to continue a stopped fit",
                    out_dir.join(f).display(),
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
    resume: Option<Checkpoint>,
}

pub fn run(a: FitArgs) -> anyhow::Result<()> {
    progress::install_interrupt_handler(
        "stopping at the next update and saving a checkpoint and the best model so far",
    );
    if !(a.checkpoint_every.is_finite() && a.checkpoint_every >= 0.0) {
        return Err(Error::arg("--checkpoint-every", "must be a number of seconds ≥ 0").into());
    }
    let resume = a.resume.as_deref().map(checkpoints::load).transpose()?;
    let (path, which, options) = match (&a.image, &resume) {
        (Some(p), _) => (
            p.clone(),
            a.which.clone(),
            a.tuning
                .options(a.method, a.variant, a.neurons, a.nonzeros, a.seed),
        ),
        (None, Some((_, r))) => (r.image.clone(), r.which(), r.options.clone()),
        (None, None) => {
            return Err(Error::arg("IMAGE", "give the image to fit (or --resume DIR)").into())
        }
    };
    let image = which.load(&path)?;
    let plan = options.plan(&image)?;
    let run = ImageRun::new(&path, &which, &image, &options);
    if let (Some(dir), Some((c, _))) = (&a.resume, &resume) {
        if plan.method == Method::Imp {
            return Err(Error::arg(
                "--method",
                "IMP fits cannot be resumed (they restart); --resume continues IHT fits",
            )
            .into());
        }
        checkpoints::check(dir, c, &run)?;
    }
    let job = Job {
        path,
        run,
        resume: resume.map(|(c, _)| c),
    };
    let out_dir = prepare_out_dir(&a, &job)?;
    let fit = match plan.method {
        Method::Iht => fit_iht(&a, &job, &image, &plan, &out_dir)?,
        Method::Imp => fit_imp(&a, &job, &image, &plan)?,
    };
    save_and_print(&a, &job, &image, &plan, &out_dir, fit)
}

/// Announces the fit on stderr.
fn announce(a: &FitArgs, job: &Job, image: &Image, plan: &FitPlan, info: &backend::BackendInfo) {
    a.device.announce(info);
    eprintln!(
        "spinr: fitting {} ({}×{} {}, {} samples): {} m={} s={} d={} σ={:?} ({} coords) on {} ({}), {}",
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
        plan.cfg.s,
        plan.spec.features,
        plan.spec.sigma,
        plan.spec.coords.as_str(),
        info.kind,
        info.adapter,
        match plan.batch_size {
            None => "full batch".to_string(),
            Some(b) => format!("minibatches of {b}"),
        }
    );
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

fn fit_iht(
    a: &FitArgs,
    job: &Job,
    image: &Image,
    plan: &FitPlan,
    out_dir: &Path,
) -> anyhow::Result<ImageFit> {
    let problem = plan.problem(image)?;
    let mut be = backend::create_with(
        a.device.backend,
        a.device.adapter.as_deref(),
        problem.clone(),
        plan.cfg.s,
        super::gpu_options(plan.minibatch()),
    )?;
    let info = be.info();
    announce(a, job, image, plan, &info);
    let mut report = FitReport::start(
        &job.path.display().to_string(),
        plan,
        &info,
        &out_dir.display().to_string(),
    );
    let resume = job.resume.as_ref().map(|c| Resume {
        at: c.at.clone(),
        state: c.state.clone(),
    });
    let earlier = job.resume.as_ref().map_or(0.0, |c| c.seconds);
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
        checkpoints::describe(&job.run),
        Duration::from_secs_f64(a.checkpoint_every),
        earlier,
        progress::stop_requested,
    );
    let history = resume.as_ref().map_or(&[][..], |r| &r.at.history[..]);
    let mut progress = Progress::new(plan.cfg.iters, image.data.len(), history, earlier);
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
        Err(e) => return Err(salvage(e, job, plan, &saver, out_dir)),
    };
    super::print_dispatch_profile(be.as_ref());
    if let Some(e) = progress.write_error.or(saver.error) {
        return Err(e.into());
    }
    fit.seconds += earlier;
    Ok(fit)
}

/// A fit that failed at run time (a GPU out of memory, a lost device): the best model of the
/// last checkpoint still goes to `model.safetensors`, and the error says how to go on.
fn salvage(e: Error, job: &Job, plan: &FitPlan, saver: &Saver, out_dir: &Path) -> anyhow::Error {
    let last = saver
        .saved
        .as_ref()
        .map(|(at, st)| (at, st))
        .or(job.resume.as_ref().map(|c| (&c.at, &c.state)));
    let Some((at, state)) = last.filter(|(at, _)| at.best_loss.is_some()) else {
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
    };
    let path = out_dir.join(MODEL_FILE);
    let saved = match model::save(&model, &path) {
        Ok(()) => format!(
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

fn fit_imp(a: &FitArgs, job: &Job, image: &Image, plan: &FitPlan) -> anyhow::Result<ImageFit> {
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
    let fit = inr_fit::fit_imp(
        image,
        plan,
        &problem,
        &device,
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
    )?;
    bar.finish_and_clear();
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
    let model_bytes = std::fs::metadata(&model_path)
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            path: model_path.clone(),
            msg: e.to_string(),
        })?;
    let mut report = FitReport::start(
        &job.path.display().to_string(),
        plan,
        &fit.backend,
        &out_dir.display().to_string(),
    );
    report.finish(image, &fit, Some(model_bytes))?;
    write_report(out_dir, &report)?;

    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {}×{} {}, m={} s={} d={}: {} epochs in {:.1} s on {} ({})",
            job.path.display(),
            image.height,
            image.width,
            image.kind(),
            report.neurons,
            report.nonzeros,
            report.features,
            report.iterations,
            report.seconds,
            report.backend,
            report.adapter
        );
        println!(
            "  PSNR {:.2} dB (8-bit PNG {:.2} dB), SSIM {:.4}, model {} bytes = {:.3} bits/pixel",
            report.psnr,
            report.psnr_8bit.unwrap_or(0.0),
            report.ssim.unwrap_or(0.0),
            model_bytes,
            report.bits_per_pixel.unwrap_or(0.0)
        );
        println!(
            "  yardstick: the best {}-term DCT of the image gives {:.2} dB",
            report.nonzeros,
            report.dct_psnr.unwrap_or(0.0)
        );
        for f in [MODEL_FILE, RECONSTRUCTION_FILE, REPORT_FILE] {
            println!("  wrote {}", out_dir.join(f).display());
        }
    }
    let checkpoint = out_dir.join(CHECKPOINT_FILE);
    if fit.stopped {
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
    if checkpoint.exists() {
        std::fs::remove_file(&checkpoint).map_err(|e| Error::Io {
            path: checkpoint.clone(),
            msg: format!("cannot remove the finished fit's checkpoint: {e}"),
        })?;
    }
    Ok(())
}
