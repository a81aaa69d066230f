//! The flags of `spinr fit` (shared in part with `spinr sweep`) and what they parse into.

use super::super::DeviceArgs;
use crate::error::Param;
use crate::iht::{FirstStep, IhtChoices, Refine, Variant};
use crate::inr::fit::{self as inr_fit, BatchChoice, FitOptions, Frequencies, Method};
use crate::inr::planes::{self, Colour};
use crate::inr::{image as img, Coords, Image};
use crate::problem::GateMode;
use clap::Args;
use std::path::{Path, PathBuf};

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
        Param::Colour => "--colour",
        Param::Momentum => "--momentum",
        Param::Candidates => "--candidates",
        Param::GrowFrom => "--grow-from",
        Param::TimeBudget => "--time-budget",
        Param::DctShare => "--dct-share",
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
    /// coordinates in cycles per image along the longer side (default: read off the image, the
    /// median frequency of its s largest DCT terms; the paper's variant 20; at most a third of
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
    /// Colour images: luma-chroma (three gray networks on luma and two chroma planes, each
    /// with its share of the nonzeros: spinr's IHT default) or channel-axis (one network, the
    /// channel a third grid axis: the paper's, and the default of IMP and --variant paper).
    #[arg(long, value_enum, value_name = "MODEL")]
    pub colour: Option<Colour>,
    /// Where the feature frequencies come from: spectrum (three quarters read off the image,
    /// each from one of its s largest DCT terms, the rest drawn from N(0, σ²); spinr's IHT
    /// default with unit coordinates, though a colour fit's chroma planes then stay Gaussian)
    /// or gaussian (all drawn from N(0, σ²): the paper's, and the default of IMP,
    /// --variant paper and --coords pixel).
    #[arg(long, value_enum, value_name = "FROM")]
    pub frequencies: Option<Frequencies>,
    /// Epochs (full passes over the samples): default 30 for images (50 per plane of a
    /// luma-chroma fit); in `spinr sweep`, 100 for
    /// planted networks and 15 / 50 for binary / multiclass classifiers.
    #[arg(long, value_name = "T")]
    pub iters: Option<usize>,
    /// Seconds for the training (epochs and polish, per fit): the epoch count is re-planned
    /// after every epoch to end near them, from what the epochs so far took. More epochs where
    /// the hardware makes them cheap; not reproducible bit for bit (the report gives the
    /// epochs run). IHT only; not with --iters or --resume.
    #[arg(long, value_name = "SECONDS", conflicts_with = "iters")]
    pub time_budget: Option<f64>,
    /// Samples (pixel-channels) per update, "full", or A..B: batches growing geometrically
    /// from A samples in the first epoch to B in the last. Default: full batch up to 8192
    /// samples; above that IHT grows from n/64 (at least 256) to n/4 (both at most 65536)
    /// and IMP uses n/64 clamped to 2048..65536 (the paper's variant: full batch).
    #[arg(long, value_name = "B|A..B|full")]
    pub batch_size: Option<BatchSize>,
    /// sequential (the paper's ReLU network) or convex (fixed random gates).
    #[arg(long, value_enum, default_value = "sequential")]
    pub gates: GateMode,
    /// Refinement steps K per IHT step (default 10, 3 with minibatches, 2 on each side of the
    /// prune when updates over-select (--candidates); the paper's variant: 10).
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
    /// Rounds of 20 conjugate-gradient steps over all pixels on the final support after the
    /// last epoch, gates updated between rounds (ReLU gating; with DCT terms each round fits
    /// the network to the image less its terms; default 3 full batch, 1 with minibatches, 2
    /// with minibatches and DCT terms, the paper's variant 0).
    #[arg(long, value_name = "R")]
    pub polish: Option<usize>,
    /// Momentum β of minibatch updates: each starts from w + β·(w − w_prev) on w's support
    /// (default 0.3 for spinr's minibatch image fits, else 0).
    #[arg(long, value_name = "β")]
    pub momentum: Option<f32>,
    /// Candidates per IHT update as a multiple of s: keep the F·s largest entries of the
    /// gradient step, refine them, prune to the s largest and refine again (default 2 for
    /// spinr's minibatch image fits below s = 3000, else 1 = plain IHT).
    #[arg(long, value_name = "F")]
    pub candidates: Option<f32>,
    /// The share of s the support starts from: the first epoch's updates keep F·s nonzeros,
    /// rising linearly to s after 15% of the epochs (default 0.5 for spinr's minibatch image
    /// fits below s = 3000, else 1 = s from the start).
    #[arg(long, value_name = "F")]
    pub grow_from: Option<f32>,
    /// The share of s given to DCT terms: the largest DCT coefficients of what the network
    /// leaves of the image join the model (fitted with it in the polish), and the network
    /// keeps the rest of s (default 1/6 for spinr's IHT with unit coordinates, else 0; 0 fits
    /// the network alone).
    #[arg(long, value_name = "F")]
    pub dct_share: Option<f64>,
}

impl FitTuning {
    /// The IHT flags given, by name: IMP trains its dense network with Adam and has no use for
    /// them, so `spinr fit --method imp` refuses them rather than ignore them. (A sweep applies
    /// them to its IHT cells only.)
    pub fn iht_flags(&self) -> Vec<&'static str> {
        [
            ("--inner", self.inner.is_some()),
            ("--first-step", self.first_step.is_some()),
            ("--refine", self.refine.is_some()),
            ("--rescue", self.rescue.is_some()),
            ("--polish", self.polish.is_some()),
            ("--momentum", self.momentum.is_some()),
            ("--candidates", self.candidates.is_some()),
            ("--grow-from", self.grow_from.is_some()),
            ("--time-budget", self.time_budget.is_some()),
            ("--dct-share", self.dct_share.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// The library options of one fit with these flags, of an image with `channels`
    /// channels (a luma-chroma fit's planes default to [`planes::PLANE_ITERS`] epochs).
    pub fn options(
        &self,
        method: Method,
        variant: Variant,
        neurons: usize,
        nonzeros: usize,
        seed: u64,
        channels: usize,
    ) -> FitOptions {
        let in_planes = matches!(
            planes::resolve(self.colour, channels, method, variant),
            Ok(Some(Colour::LumaChroma))
        );
        let default_iters = if in_planes {
            planes::PLANE_ITERS
        } else {
            inr_fit::DEFAULT_ITERS
        };
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
            iters: self.iters.unwrap_or(default_iters),
            batch: match self.batch_size {
                None => BatchChoice::Auto,
                Some(BatchSize::Full) => BatchChoice::Full,
                Some(BatchSize::Samples(b)) => BatchChoice::Samples(b),
                Some(BatchSize::Grow(a, b)) => BatchChoice::Grow(a, b),
            },
            gates: self.gates,
            iht: IhtChoices {
                inner: self.inner,
                refine: self.refine,
                first_step: self.first_step,
                rescue: self.rescue,
                polish: self.polish,
                momentum: self.momentum,
                candidates: self.candidates,
                grow_from: self.grow_from,
            },
            seed,
            colour: self.colour,
            frequencies: self.frequencies,
            time_budget: self.time_budget,
            dct_share: self.dct_share,
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
    /// Hidden neurons m (default: 50; spinr's IHT fits take s/100 above s = 5000, at most 100).
    #[arg(long, short = 'm', value_name = "M")]
    pub neurons: Option<usize>,
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
    /// Memory the fit may use (e.g. 8G, 512M): checked before allocating, on the host and on
    /// the GPU. Default: what the machine has available.
    #[arg(long, value_name = "SIZE", value_parser = super::super::parse_memory)]
    pub max_memory: Option<u64>,
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
    /// From the first epoch's size to the last's.
    Grow(usize, usize),
}

impl std::str::FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let samples = |t: &str| match t.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "{s:?} is not a positive number of samples, A..B (growing from A to B) or \"full\""
            )),
            Ok(b) => Ok(b),
        };
        match s {
            "full" => Ok(BatchSize::Full),
            _ => match s.split_once("..") {
                Some((a, b)) => {
                    let (a, b) = (samples(a)?, samples(b)?);
                    if a > b {
                        return Err(format!(
                            "{s:?}: batches grow, so the first size must not exceed the last"
                        ));
                    }
                    Ok(BatchSize::Grow(a, b))
                }
                None => samples(s).map(BatchSize::Samples),
            },
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Full => write!(f, "full"),
            BatchSize::Samples(b) => write!(f, "{b}"),
            BatchSize::Grow(a, b) => write!(f, "{a}..{b}"),
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
