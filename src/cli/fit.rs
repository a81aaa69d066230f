//! `spinr fit`: fit an image as a sparse ReLU network (implicit neural representation).
//!
//! Messages and the progress bar go to stderr, results to stdout. Every output file is written
//! atomically; Ctrl-C stops after the current epoch and still writes the best model so far.

use super::DeviceArgs;
use crate::backend;
use crate::error::Error;
use crate::iht::{self, EpochReport, FirstStep, Gating, IhtConfig, Refine};
use crate::inr::{self, image as img, Coords, ImageModel, InrSpec};
use crate::metrics;
use crate::model;
use crate::problem::GateMode;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Defaults, chosen by measurement on assets/camera.png and the MNIST digits (README, "Image
/// fits"): quality per second on a 2-core CPU, where the cost of an epoch is about `n·s`.
pub const DEFAULT_NEURONS: usize = 50;
pub const DEFAULT_NONZEROS: usize = 3000;
pub const DEFAULT_FEATURES: usize = 512;
pub const DEFAULT_ITERS: usize = 30;
/// Refinement steps per IHT step: 3 reached the PSNR of the paper's 10 per epoch at a third
/// of the time on camera.png.
pub const DEFAULT_INNER: usize = 3;
/// σ in cycles per image (longer side) for unit coordinates, at most a third of the longer
/// side in pixels (best measured: 20 on camera.png at 128² (10: −1 dB, 40: −5 dB); 10 on the
/// 28² digits).
pub const DEFAULT_SIGMA_UNIT: f64 = 20.0;

/// The default spatial σ of an image whose longer side is `long` pixels.
pub fn default_sigma(coords: Coords, long: usize) -> f64 {
    match coords {
        Coords::Unit => DEFAULT_SIGMA_UNIT.min(long as f64 / 3.0),
        Coords::Pixel => DEFAULT_SIGMA_PIXEL,
    }
}
/// σ in cycles per pixel for pixel coordinates (the paper's MNIST value).
pub const DEFAULT_SIGMA_PIXEL: f64 = 2.0;
/// Up to this many samples (pixel-channels) a fit is full batch, as the paper's digits.
pub const FULL_BATCH_MAX: usize = 8192;
/// Above it, minibatches of n/64 samples, clamped to this range: many small IHT updates per
/// epoch beat few large ones (camera.png at 256²: 2048 → 24.1 dB, 8192 → 23.2 dB, 32768 →
/// 20.1 dB after 8 epochs), and the upper end bounds per-update buffers on huge images.
pub const AUTO_BATCH_MIN: usize = 2048;
pub const AUTO_BATCH_MAX: usize = 65536;

/// The minibatch size a fit of `n` samples uses when `--batch-size` is not given.
pub fn auto_batch(n: usize) -> Option<usize> {
    (n > FULL_BATCH_MAX).then(|| (n / 64).clamp(AUTO_BATCH_MIN, AUTO_BATCH_MAX))
}

/// The output files, all inside `--out`.
pub const MODEL_FILE: &str = "model.safetensors";
pub const RECONSTRUCTION_FILE: &str = "reconstruction.png";
pub const REPORT_FILE: &str = "report.json";

#[derive(Args, Debug)]
pub struct FitArgs {
    /// The image to fit: PNG, JPEG, TIFF, BMP, GIF, WebP (gray or colour, 8 or 16 bit) or an
    /// MNIST IDX file (*.idx3-ubyte[.gz], see --index).
    pub image: PathBuf,
    /// Which image of an MNIST IDX file to fit.
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,
    /// Fit a resampled copy: N = longer side in pixels (aspect kept), or WxH. A unit-coordinate
    /// model still renders at any size (`spinr render --width`).
    #[arg(long, value_name = "N|WxH")]
    pub resize: Option<Resize>,
    /// Hidden neurons m.
    #[arg(long, short = 'm', value_name = "M", default_value_t = DEFAULT_NEURONS)]
    pub neurons: usize,
    /// Nonzero weights s: the size of the model.
    #[arg(long, short = 's', value_name = "S", default_value_t = DEFAULT_NONZEROS)]
    pub nonzeros: usize,
    /// Fourier features d (even: sin and cos pairs).
    #[arg(long, short = 'd', value_name = "D", default_value_t = DEFAULT_FEATURES)]
    pub features: usize,
    /// Frequency standard deviation of the spatial axes: one value, or rows,cols. With unit
    /// coordinates in cycles per image along the longer side (default 20, at most a third of
    /// the longer side in pixels), with pixel
    /// coordinates in cycles per pixel (default 2).
    #[arg(long, value_name = "σ", value_delimiter = ',', num_args = 1)]
    pub sigma: Vec<f64>,
    /// Frequency standard deviation of the channel axis (integer coordinates 0, 1, 2).
    #[arg(long, value_name = "σ", default_value_t = 0.05)]
    pub sigma_channel: f64,
    /// unit: pixel centres in (0,1), renders at any size; pixel: the paper's integer indices.
    #[arg(long, value_enum, default_value = "unit")]
    pub coords: Coords,
    /// Draw all frequencies at random as the paper does (no constant feature).
    #[arg(long)]
    pub plain_features: bool,
    /// Epochs (full passes over the pixels).
    #[arg(long, value_name = "T", default_value_t = DEFAULT_ITERS)]
    pub iters: usize,
    /// Samples (pixel-channels) per IHT update, or "full". Default: full batch up to 8192
    /// samples, above that n/64 clamped to 2048..65536.
    #[arg(long, value_name = "B|full")]
    pub batch_size: Option<BatchSize>,
    /// sequential (the paper's ReLU network) or convex (fixed random gates).
    #[arg(long, value_enum, default_value = "sequential")]
    pub gates: GateMode,
    /// Refinement steps K per IHT step (the paper uses 10).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_INNER)]
    pub inner: usize,
    /// Step size of the first step: paper (μ = 1e-14) or normalized.
    #[arg(long, value_enum, default_value = "paper")]
    pub first_step: FirstStep,
    /// Refinement step size: exact (line search at every inner step) or armijo (the paper's).
    #[arg(long, value_enum, default_value = "exact")]
    pub refine: Refine,
    /// Seed of the Fourier features (the gate seed is derived from it) and minibatch order.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub seed: u64,
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

/// `report.json`. Rewritten while the fit runs (`status` "running"), then with the results.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitReport {
    /// "running", "done" or "stopped" (interrupted: the best model so far was saved).
    pub status: String,
    pub image: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub neurons: usize,
    pub features: usize,
    /// Nonzeros of the model.
    pub nonzeros: usize,
    /// Per grid axis: rows, columns[, channels].
    pub sigma: Vec<f64>,
    pub coords: Coords,
    pub constant_feature: bool,
    pub gates: GateMode,
    /// How the saved model gates (null while running).
    pub gating: Option<Gating>,
    pub seed: u64,
    pub gate_seed: u64,
    /// Epochs asked for.
    pub iters: usize,
    /// Epochs run.
    pub iterations: usize,
    /// Samples per update; null = full batch.
    pub batch_size: Option<usize>,
    pub inner: usize,
    pub first_step: FirstStep,
    pub refine: Refine,
    /// PSNR (dB, peak 1) of the model's predictions clamped to [0, 1]; while running, of the
    /// best epoch so far. Capped at 200 dB (an exact fit).
    pub psnr: f64,
    /// PSNR of the 8-bit reconstruction.png.
    pub psnr_8bit: Option<f64>,
    pub ssim: Option<f64>,
    /// Wall time of the fit itself.
    pub seconds: f64,
    pub backend: String,
    pub adapter: String,
    pub peak_device_bytes: u64,
    pub model_bytes: Option<u64>,
    /// model_bytes · 8 / pixels.
    pub bits_per_pixel: Option<f64>,
    pub stopped: bool,
    pub out_dir: String,
    pub spinr_version: String,
}

/// PSNR with peak 1, capped so that JSON always holds a number.
pub fn psnr(mse: f64) -> f64 {
    metrics::psnr_from_mse(mse, 1.0).min(200.0)
}

static STOP: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// First Ctrl-C: finish the epoch and save the best model. Second: exit at once (the atomic
/// writes leave no partial output behind).
fn install_interrupt_handler() {
    let r = ctrlc::set_handler(|| {
        if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\nspinr: interrupted again, exiting without saving");
            std::process::exit(130);
        }
        STOP.store(true, Ordering::SeqCst);
        eprintln!(
            "\nspinr: interrupt: stopping after this epoch and saving the best model so far \
             (Ctrl-C again to quit at once)"
        );
    });
    if let Err(e) = r {
        eprintln!("spinr: warning: Ctrl-C will not save the model ({e})");
    }
}

/// The default output folder: beside the image, named after it.
pub fn default_out_dir(image: &Path, index: Option<usize>) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = if inr::idx::is_idx(image) {
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

pub fn run(a: FitArgs) -> anyhow::Result<()> {
    install_interrupt_handler();
    if a.gates == GateMode::Gaussian {
        return Err(Error::arg(
            "--gates",
            "gaussian sensing is for `spinr plant`; use sequential or convex",
        )
        .into());
    }
    if a.iters == 0 {
        return Err(Error::arg("--iters", "at least one epoch is needed").into());
    }
    if a.inner == 0 {
        return Err(Error::arg("--inner", "at least one refinement step is needed").into());
    }
    let mut image = img::load(&a.image, a.index)?;
    if let Some(r) = a.resize {
        let (nh, nw) = r.apply(image.height, image.width);
        if (nh, nw) != (image.height, image.width) {
            eprintln!(
                "spinr: resampling {}×{} to {nw}×{nh} (--resize)",
                image.width, image.height
            );
            image = image.resized(nh, nw);
        }
    }
    let (h, w, c) = (image.height, image.width, image.channels);
    let axes = inr::grid_axes(h, w, c);
    let n = image.data.len();

    let spatial = if a.sigma.is_empty() {
        vec![default_sigma(a.coords, h.max(w))]
    } else {
        a.sigma.clone()
    };
    let sigma = inr::sigma_per_axis(&spatial, a.sigma_channel, a.coords, h, w, c)?;
    let spec = InrSpec {
        neurons: a.neurons,
        features: a.features,
        sigma,
        coords: a.coords,
        feature_seed: a.seed,
        gate_seed: inr::gate_seed(a.seed),
        gates: a.gates,
        constant_feature: !a.plain_features,
    };
    let batch_size = match a.batch_size {
        Some(BatchSize::Full) => None,
        Some(BatchSize::Samples(b)) if b >= n => None,
        Some(BatchSize::Samples(b)) => Some(b),
        None => auto_batch(n),
    };

    // Refuse to clobber an earlier fit before spending any time.
    let out_dir = a
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&a.image, a.index));
    let outputs = [MODEL_FILE, RECONSTRUCTION_FILE, REPORT_FILE];
    if !a.force {
        if let Some(f) = outputs.iter().find(|f| out_dir.join(f).exists()) {
            return Err(Error::arg(
                "--force",
                format!(
                    "{} already exists (outputs of an earlier fit); pass --force to overwrite \
                     them or --out to write elsewhere",
                    out_dir.join(f).display()
                ),
            )
            .into());
        }
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::Io {
        path: out_dir.clone(),
        msg: format!("cannot create the output folder: {e} (choose another with --out)"),
    })?;

    let problem = Arc::new(spec.problem(&axes, &axes, image.data.clone())?);
    problem.check_nonzeros(a.nonzeros)?;
    let mut be = backend::create_for(
        a.device.backend,
        a.device.adapter.as_deref(),
        problem.clone(),
        a.nonzeros,
        batch_size.is_some(),
    )?;
    let info = be.info();
    let mut cfg = IhtConfig::new(a.nonzeros, a.iters, a.gates);
    cfg.inner = a.inner;
    cfg.batch_size = batch_size;
    cfg.seed = a.seed;
    cfg.first_step = a.first_step;
    cfg.refine = a.refine;

    eprintln!(
        "spinr: fitting {} ({h}×{w} {}, {n} samples): m={} s={} d={} σ={:?} ({} coords) on {} ({}), {}",
        a.image.display(),
        image.kind(),
        spec.neurons,
        a.nonzeros,
        spec.features,
        spec.sigma,
        spec.coords.as_str(),
        info.kind,
        info.adapter,
        match batch_size {
            None => "full batch".to_string(),
            Some(b) => format!("minibatches of {b}"),
        }
    );

    let mut report = FitReport {
        status: "running".into(),
        image: a.image.display().to_string(),
        height: h,
        width: w,
        channels: c,
        neurons: spec.neurons,
        features: spec.features,
        nonzeros: a.nonzeros,
        sigma: spec.sigma.clone(),
        coords: spec.coords,
        constant_feature: spec.constant_feature,
        gates: spec.gates,
        gating: None,
        seed: spec.feature_seed,
        gate_seed: spec.gate_seed,
        iters: a.iters,
        iterations: 0,
        batch_size,
        inner: a.inner,
        first_step: a.first_step,
        refine: a.refine,
        psnr: 0.0,
        psnr_8bit: None,
        ssim: None,
        seconds: 0.0,
        backend: info.kind.to_string(),
        adapter: info.adapter.clone(),
        peak_device_bytes: 0,
        model_bytes: None,
        bits_per_pixel: None,
        stopped: false,
        out_dir: out_dir.display().to_string(),
        spinr_version: env!("CARGO_PKG_VERSION").to_string(),
    };

    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(a.iters as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} epochs  {msg}  (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let verbose = std::env::var_os("SPINR_VERBOSE").is_some();
    let start = Instant::now();
    let mut last_write = Instant::now() - Duration::from_secs(3600);
    let mut best = f64::NEG_INFINITY;
    let mut write_error = None;
    let fit = {
        let report = &mut report;
        iht::fit(be.as_mut(), n, &cfg, |r: &EpochReport| {
            let p = psnr(r.mse());
            best = best.max(p);
            bar.set_position(r.epoch as u64 + 1);
            bar.set_message(format!("PSNR {p:.2} dB (best {best:.2})"));
            if verbose {
                bar.suspend(|| {
                    eprintln!(
                        "epoch {:4}  {:8.2} s  loss {:.6e}  PSNR {p:.2} dB",
                        r.epoch,
                        start.elapsed().as_secs_f64(),
                        r.loss
                    )
                });
            }
            // Keep report.json current, without letting small epochs turn into disk traffic.
            if last_write.elapsed() >= Duration::from_secs(1) {
                report.iterations = r.epoch + 1;
                report.psnr = best;
                report.seconds = start.elapsed().as_secs_f64();
                if let Err(e) = write_report(&out_dir, report) {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
                last_write = Instant::now();
            }
            if STOP.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?
    };
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let seconds = start.elapsed().as_secs_f64();
    let interrupted = fit.stopped;

    // Evaluate the best model exactly as `spinr render` will: clamped predictions.
    let pred = inr::predict(be.as_mut(), &fit.w, fit.gating)?;
    let recon = inr::Image {
        data: pred,
        ..image.clone()
    };
    let model = ImageModel {
        spec,
        height: h,
        width: w,
        channels: c,
        gating: fit.gating,
        w: fit.w,
    };
    let model_path = out_dir.join(MODEL_FILE);
    model::save(&model, &model_path)?;
    let recon_path = out_dir.join(RECONSTRUCTION_FILE);
    recon.save_png(&recon_path)?;
    let model_bytes = std::fs::metadata(&model_path)
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            path: model_path.clone(),
            msg: e.to_string(),
        })?;

    report.status = if interrupted { "stopped" } else { "done" }.into();
    report.stopped = interrupted;
    report.gating = Some(fit.gating);
    report.nonzeros = model.w.len();
    report.iterations = fit.iterations;
    report.psnr = psnr(metrics::mse(&recon.data, &image.data));
    report.psnr_8bit = Some(psnr(metrics::mse(&recon.quantized().data, &image.data)));
    report.ssim = Some(metrics::ssim(&recon.data, &image.data, h, w, c));
    report.seconds = seconds;
    report.peak_device_bytes = be.memory().peak_bytes;
    report.model_bytes = Some(model_bytes);
    report.bits_per_pixel = Some(model_bytes as f64 * 8.0 / image.pixels() as f64);
    write_report(&out_dir, &report)?;

    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {h}×{w} {}, m={} s={} d={}: {} epochs in {:.1} s on {} ({})",
            a.image.display(),
            image.kind(),
            report.neurons,
            report.nonzeros,
            report.features,
            report.iterations,
            seconds,
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
        for f in outputs {
            println!("  wrote {}", out_dir.join(f).display());
        }
    }
    if interrupted {
        eprintln!(
            "spinr: stopped after {} epochs; the best model so far is in {}",
            report.iterations,
            out_dir.display()
        );
        return Err(Error::Interrupted.into());
    }
    Ok(())
}
