//! Image fits as a library: [`FitOptions`] (what a user may choose, with spinr's or the
//! paper's defaults for what they leave open) → a validated [`FitPlan`] for one image → a fit
//! on a backend ([`fit_iht`]) → a [`FitReport`]. `spinr fit` and `spinr sweep` are thin
//! layers over this module.

use super::colour::Colour;
pub use super::spectrum::Frequencies;
use super::{grid_axes, sigma_per_axis, Coords, Image, ImageModel, InrSpec};
use crate::backend::{Backend, BackendInfo};
use crate::budget::Estimate;
use crate::error::{Error, Param, Result};
use crate::iht::{
    self, Checkpointer, EpochReport, FitResult, Gating, IhtChoices, IhtConfig, NoCheckpoints,
    Resume, Task, Variant,
};
use crate::metrics;

pub use super::fit_imp::{fit_imp, fit_imp_from, imp_image_fit, imp_options, ImpRunSoFar};
use crate::problem::{GateMode, Problem};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// Defaults, chosen by measurement on assets/camera.png and the MNIST digits (README, "Image
/// fits"): quality per second on a 2-core CPU, where the cost of an epoch is about `n·s`.
pub const DEFAULT_NEURONS: usize = 50;
pub const DEFAULT_NONZEROS: usize = 3000;
pub const DEFAULT_FEATURES: usize = 512;
pub const DEFAULT_ITERS: usize = 30;
/// Nonzeros per neuron of spinr's IHT fits above [`DEFAULT_NEURONS`] ([`default_neurons`]).
pub const NONZEROS_PER_NEURON: usize = 100;
/// The most neurons [`default_neurons`] gives.
pub const MAX_DEFAULT_NEURONS: usize = 100;

/// Hidden neurons when none are asked for: spinr's IHT fits take one per
/// [`NONZEROS_PER_NEURON`] nonzeros within [[`DEFAULT_NEURONS`], [`MAX_DEFAULT_NEURONS`]], so
/// 50 up to s = 5000 and 100 from s = 10 000. Measured at s = 10 000 (128², eight photos,
/// seeds 0–2): m = 100 gains +0.2 to +0.8 dB on every photo (median +0.39) at about the same
/// time, since an epoch's support passes cost `n·s` whatever `m`; m = 200 loses again (README,
/// "Choosing m"). IMP (its dense network costs `n·m·d` per epoch) and the paper's variant keep 50.
pub fn default_neurons(method: Method, variant: Variant, s: usize) -> usize {
    match (method, variant) {
        (Method::Iht, Variant::Spinr) => s
            .div_ceil(NONZEROS_PER_NEURON)
            .clamp(DEFAULT_NEURONS, MAX_DEFAULT_NEURONS),
        _ => DEFAULT_NEURONS,
    }
}

/// σ in cycles per image (longer side) for unit coordinates when it is not read off the image
/// (the paper's variant, and images without structure: [`super::spectrum::Spectrum::sigma`]), at
/// most a third of the longer side in pixels.
pub const DEFAULT_SIGMA_UNIT: f64 = 20.0;
/// σ in cycles per pixel for pixel coordinates (the paper's MNIST value).
pub const DEFAULT_SIGMA_PIXEL: f64 = 2.0;
/// σ of the channel axis (integer coordinates 0, 1, 2; the paper's CIFAR value).
pub const DEFAULT_SIGMA_CHANNEL: f64 = 0.05;
/// Up to this many samples (pixel-channels) a fit is full batch, as the paper's digits.
pub const FULL_BATCH_MAX: usize = 8192;
/// Above it, IMP uses minibatches of n/64 samples, clamped to this range: many small updates
/// per epoch beat few large ones (camera.png at 256²: 2048 → 24.1 dB, 8192 → 23.2 dB, 32768 →
/// 20.1 dB after 8 epochs), and the upper end bounds per-update buffers on huge images.
pub const AUTO_BATCH_MIN: usize = 2048;
pub const AUTO_BATCH_MAX: usize = 65536;
/// IHT's minibatches grow instead: from n/64 samples (at least this many) in the first epoch
/// to n/4 in the last, geometrically, both at most [`AUTO_BATCH_MAX`]. Small noisy updates
/// find a support fast, larger ones settle it: camera.png at 128², s = 3000, 27.36 dB with
/// a fixed 2048 against 28.55 dB growing 256 → 4096, in the same time (README, "Image fits").
pub const GROW_BATCH_MIN: usize = 256;
/// From this many samples per nonzero on, an image whose n/64 is above [`GROW_BATCH_MIN`]
/// starts from fine batches ([`fine_batches`]).
pub const FINE_BATCHES_FROM: usize = 8;

/// Whether an IHT fit of `n` samples for `s` nonzeros starts from fine batches: n/256
/// samples (at least [`GROW_BATCH_MIN`]) instead of n/64, so four times the updates while
/// the support is found. At 256² with s = 1000 and 3000: +0.30 and +0.37 dB (README, "Fine
/// first batches"). It needs many samples per nonzero (at 256², s = 10 000 keeps n/64) and
/// room below n/64 (up to 128² n/64 is already the floor).
pub fn fine_batches(n: usize, s: usize) -> bool {
    // `n / 8 ≥ s` is `n ≥ 8·s` for integers, without overflow for any `s`.
    n / FINE_BATCHES_FROM >= s && n / 64 > GROW_BATCH_MIN
}

/// The default spatial σ of an image whose longer side is `long` pixels.
pub fn default_sigma(coords: Coords, long: usize) -> f64 {
    match coords {
        Coords::Unit => DEFAULT_SIGMA_UNIT.min(long as f64 / 3.0),
        Coords::Pixel => DEFAULT_SIGMA_PIXEL,
    }
}

/// Where a fit's frequencies come from unless `asked`: the spectrum for spinr's IHT with unit
/// coordinates (where σ too is read off the image); the paper's variant, IMP (the paper's
/// baseline) and pixel coordinates (the digit grid) keep the paper's Gaussian features, and
/// so do the chroma planes of a luma-chroma fit (`planes::PlanesPlan`).
pub fn default_frequencies(
    asked: Option<Frequencies>,
    method: Method,
    variant: Variant,
    coords: Coords,
) -> Frequencies {
    asked.unwrap_or(
        if method == Method::Iht && variant == Variant::Spinr && coords == Coords::Unit {
            Frequencies::Spectrum
        } else {
            Frequencies::Gaussian
        },
    )
}

/// The share of `s` spinr's IHT image fits give to DCT terms of the network's residual
/// ([`super::terms`]), measured on the photo set (README, "DCT terms").
pub const DEFAULT_DCT_SHARE: f64 = 1.0 / 6.0;

/// The share of the nonzeros given to DCT terms unless `asked`: [`DEFAULT_DCT_SHARE`] for
/// spinr's IHT with unit coordinates, none for the paper's variant, IMP and pixel coordinates
/// (the digit grid), which fit the network alone.
pub fn default_dct_share(method: Method, variant: Variant, coords: Coords) -> f64 {
    if method == Method::Iht && variant == Variant::Spinr && coords == Coords::Unit {
        DEFAULT_DCT_SHARE
    } else {
        0.0
    }
}

/// The minibatch size an IMP fit of `n` samples uses when none is given.
pub fn auto_batch(n: usize) -> Option<usize> {
    (n > FULL_BATCH_MAX).then(|| (n / 64).clamp(AUTO_BATCH_MIN, AUTO_BATCH_MAX))
}

/// The first and last epoch's minibatch sizes of an IHT fit of `n` samples for `s` nonzeros
/// when none is given ([`GROW_BATCH_MIN`], [`fine_batches`]).
pub fn auto_growth(n: usize, s: usize) -> Option<(usize, usize)> {
    (n > FULL_BATCH_MAX).then(|| {
        let parts = if fine_batches(n, s) { 256 } else { 64 };
        let first = (n / parts).clamp(GROW_BATCH_MIN, AUTO_BATCH_MAX);
        (first, (n / 4).clamp(first, AUTO_BATCH_MAX))
    })
}

/// Samples per update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchChoice {
    /// Full batch up to [`FULL_BATCH_MAX`] samples, else [`auto_growth`] (IHT) or
    /// [`auto_batch`] (IMP).
    #[default]
    Auto,
    Full,
    Samples(usize),
    /// Batches growing geometrically from the first epoch's size to the last's.
    Grow(usize, usize),
}

/// How the sparse network is trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Iterative hard thresholding: memory linear in `s`.
    #[default]
    Iht,
    /// Iterative magnitude pruning of the dense network (the paper's baseline).
    Imp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Iht => "iht",
            Method::Imp => "imp",
        }
    }
}

/// What a user chooses for an image fit. `None` and empty fields take the variant's defaults.
/// Serialised into checkpoints (a resumed fit must ask for the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitOptions {
    pub method: Method,
    pub variant: Variant,
    /// Hidden neurons (`spinr fit` without `-m`: [`default_neurons`]).
    pub neurons: usize,
    pub nonzeros: usize,
    pub features: usize,
    /// Spatial σ: empty (spinr's variant with unit coordinates reads it off the image,
    /// [`super::spectrum::Spectrum::sigma`]; otherwise the fixed default for the coordinates), one
    /// value (the longer side; isotropic in pixels) or rows,columns.
    pub sigma: Vec<f64>,
    pub sigma_channel: f64,
    pub coords: Coords,
    /// Keep a constant feature (`None`: yes for spinr, no for the paper's variant).
    pub constant_feature: Option<bool>,
    /// Epochs.
    pub iters: usize,
    pub batch: BatchChoice,
    pub gates: GateMode,
    pub iht: IhtChoices,
    /// Seed of the features (the gate seed derives from it) and of the minibatch order.
    pub seed: u64,
    /// How a colour image is fitted (`None`: `planes::resolve`'s default).
    #[serde(default)]
    pub colour: Option<Colour>,
    /// Where the feature frequencies come from (`None`: [`default_frequencies`]).
    #[serde(default)]
    pub frequencies: Option<Frequencies>,
    /// Wall-clock seconds for the training ([`IhtConfig::time_budget`]; a colour fit's planes
    /// share them); `iters` is then only the first plan. `None`: `iters` epochs.
    #[serde(default)]
    pub time_budget: Option<f64>,
    /// The share of `nonzeros` given to DCT terms of the network's residual (`None`:
    /// [`default_dct_share`]).
    #[serde(default)]
    pub dct_share: Option<f64>,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            method: Method::Iht,
            variant: Variant::Spinr,
            neurons: DEFAULT_NEURONS,
            nonzeros: DEFAULT_NONZEROS,
            features: DEFAULT_FEATURES,
            sigma: Vec::new(),
            sigma_channel: DEFAULT_SIGMA_CHANNEL,
            coords: Coords::Unit,
            constant_feature: None,
            iters: DEFAULT_ITERS,
            batch: BatchChoice::Auto,
            gates: GateMode::Sequential,
            iht: IhtChoices::default(),
            seed: 0,
            colour: None,
            frequencies: None,
            time_budget: None,
            dct_share: None,
        }
    }
}

/// A validated fit of one image: every default resolved.
#[derive(Clone, Debug)]
pub struct FitPlan {
    pub method: Method,
    pub variant: Variant,
    pub spec: InrSpec,
    pub cfg: IhtConfig,
    /// Samples per update (the first epoch's when batches grow, `cfg.batch_end` the last's);
    /// `None` = full batch.
    pub batch_size: Option<usize>,
    /// Whether σ was read off the image ([`super::spectrum::Spectrum::sigma`]).
    pub sigma_auto: bool,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// DCT terms beside the network, fitted with it in the polish ([`super::terms`]); it has
    /// `cfg.s` weights, so the model has `cfg.s + dct_terms` nonzeros.
    pub dct_terms: usize,
}

impl FitOptions {
    /// `m`, `d` and `s` in range, each error naming the size at fault: a zero `m` or `d`
    /// is not a matter of `s`, though it leaves `s` no room.
    pub(crate) fn check_sizes(&self) -> Result<()> {
        if self.neurons == 0 {
            return Err(Error::invalid(
                Param::Neurons,
                "a network needs at least one neuron",
            ));
        }
        crate::problem::check_feature_count(self.features)?;
        crate::problem::check_index_space(self.neurons, self.features)?;
        crate::problem::check_nonzeros(self.nonzeros, self.neurons, self.features)
    }

    /// Resolves the defaults for `image` and checks every choice before anything is allocated:
    /// one network (gray, or colour on the channel axis).
    pub fn plan(&self, image: &Image) -> Result<FitPlan> {
        self.plan_as_part(image, self.nonzeros)
    }

    /// [`FitOptions::plan`] of one part of a fit of `whole_s` nonzeros (a colour plane): the
    /// defaults that follow `s` (momentum) follow the whole fit's network, its nonzeros less
    /// its DCT terms.
    pub(crate) fn plan_as_part(&self, image: &Image, whole_s: usize) -> Result<FitPlan> {
        // `s` counts the terms too, so it is checked whole.
        self.check_sizes()?;
        let share = self.resolve_dct_share()?;
        let terms = super::terms::terms_of(self.nonzeros, share);
        if terms > 0 {
            // The network is planned as a fit of the nonzeros it keeps, its defaults (σ, the
            // spectrum's frequencies, batches, momentum) those of its own size.
            let network = FitOptions {
                nonzeros: self.nonzeros - terms,
                dct_share: Some(0.0),
                ..self.clone()
            };
            let whole_net = whole_s - super::terms::terms_of(whole_s, share);
            let mut plan = network.plan_as_part(image, whole_net)?;
            plan.dct_terms = terms;
            if self.iht.polish.is_none() {
                plan.cfg.polish = plan.cfg.polish.max(iht::DEFAULT_TERMS_POLISH);
            }
            return Ok(plan);
        }
        if self.gates == GateMode::Gaussian {
            return Err(Error::invalid(
                Param::Gates,
                "gaussian sensing is for planted networks; fit images with sequential or convex \
                 gates",
            ));
        }
        // Before σ is read off the image, which ranks the image's DCT terms by `s`.
        self.check_sizes()?;
        let (h, w, c) = (image.height, image.width, image.channels);
        let n = image.data.len();
        let fixed = default_sigma(self.coords, h.max(w));
        let sigma_auto =
            self.sigma.is_empty() && self.coords == Coords::Unit && self.variant == Variant::Spinr;
        let frequencies =
            default_frequencies(self.frequencies, self.method, self.variant, self.coords);
        // One reading of the image's largest DCT terms serves σ and the frequencies.
        let spectrum = if sigma_auto || frequencies == Frequencies::Spectrum {
            Some(super::spectrum::Spectrum::read(image, self.nonzeros)?)
        } else {
            None
        };
        let spatial = if let (true, Some(sp)) = (sigma_auto, &spectrum) {
            vec![sp.sigma(self.nonzeros, h.max(w), fixed)]
        } else if self.sigma.is_empty() {
            vec![fixed]
        } else {
            self.sigma.clone()
        };
        let sigma = sigma_per_axis(&spatial, self.sigma_channel, self.coords, h, w, c)?;
        let constant_feature = self
            .constant_feature
            .unwrap_or(self.variant == Variant::Spinr);
        let image_frequencies = match &spectrum {
            Some(sp) if frequencies == Frequencies::Spectrum => sp.frequencies(
                super::spectrum::spectrum_rows(self.features, constant_feature),
                self.seed,
                self.coords,
                (h, w),
                c,
                self.sigma_channel,
            ),
            _ => Vec::new(),
        };
        let spec = InrSpec {
            neurons: self.neurons,
            features: self.features,
            sigma,
            coords: self.coords,
            feature_seed: self.seed,
            gate_seed: super::gate_seed(self.seed),
            gates: self.gates,
            constant_feature,
            image_frequencies,
        };
        let (first, last) = match self.batch {
            BatchChoice::Full => (None, None),
            BatchChoice::Samples(0) | BatchChoice::Grow(0, _) | BatchChoice::Grow(_, 0) => {
                return Err(Error::invalid(Param::BatchSize, "must be at least 1"))
            }
            BatchChoice::Samples(b) => (Some(b), None),
            BatchChoice::Grow(a, b) if a > b => {
                return Err(Error::invalid(
                    Param::BatchSize,
                    format!("{a}..{b}: batches grow, so the first size must not exceed the last"),
                ))
            }
            BatchChoice::Grow(..) if self.method == Method::Imp => {
                return Err(Error::invalid(
                    Param::BatchSize,
                    "growing batches (A..B) are for IHT; give IMP one size or \"full\"",
                ))
            }
            BatchChoice::Grow(a, b) => (Some(a), Some(b)),
            // The paper fits its small images full batch.
            BatchChoice::Auto if self.variant == Variant::Paper => (None, None),
            BatchChoice::Auto if self.method == Method::Iht => {
                auto_growth(n, whole_s).map_or((None, None), |(a, b)| (Some(a), Some(b)))
            }
            BatchChoice::Auto => (auto_batch(n), None),
        };
        // A batch of all samples is a full-batch fit, and then nothing grows.
        let batch_size = first.filter(|&b| b < n);
        let batch_end = batch_size.and(last);
        let mut cfg = self.iht.resolve(
            self.variant,
            Task::Image,
            self.nonzeros,
            self.iters,
            self.gates,
        )?;
        cfg.batch_size = batch_size;
        cfg.batch_end = batch_end;
        cfg.seed = self.seed;
        cfg.time_budget = check_time_budget(self.time_budget)?;
        if cfg.time_budget.is_some() && self.method == Method::Imp {
            return Err(Error::invalid(
                Param::TimeBudget,
                "IMP trains a fixed number of epochs per round; give it --iters instead",
            ));
        }
        if batch_size.is_some() && self.variant == Variant::Spinr {
            cfg.candidates = self
                .iht
                .candidates
                .unwrap_or(iht::default_minibatch_candidates(whole_s));
            cfg.inner = self.iht.inner.unwrap_or(if cfg.candidates > 1.0 {
                iht::DEFAULT_CANDIDATE_INNER
            } else {
                iht::DEFAULT_MINIBATCH_INNER
            });
            cfg.polish = self.iht.polish.unwrap_or(iht::DEFAULT_MINIBATCH_POLISH);
            // A rescue check predicts every sample: on large images that is an extra epoch.
            cfg.rescue = self.iht.rescue.unwrap_or(false);
            cfg.momentum = self
                .iht
                .momentum
                .unwrap_or(iht::default_minibatch_momentum(whole_s));
            cfg.grow_from = self
                .iht
                .grow_from
                .unwrap_or(iht::default_minibatch_grow_from(whole_s));
        }
        let plan = FitPlan {
            method: self.method,
            variant: self.variant,
            spec,
            cfg,
            batch_size,
            sigma_auto,
            height: h,
            width: w,
            channels: c,
            dct_terms: 0,
        };
        // Sizes (d even, m·d in range, 1 ≤ s ≤ m·d) are checked on the grid's shape alone.
        plan.spec.fourier(Vec::new()).check_features()?;
        crate::problem::check_sizes(n, plan.spec.features, plan.spec.neurons)?;
        Ok(plan)
    }
}

impl FitOptions {
    /// The share of the nonzeros for DCT terms: the one asked (checked) or the default.
    fn resolve_dct_share(&self) -> Result<f64> {
        let Some(share) = self.dct_share else {
            return Ok(default_dct_share(self.method, self.variant, self.coords));
        };
        let share = super::terms::check_share(share)?;
        if share > 0.0 && self.method == Method::Imp {
            return Err(Error::invalid(
                Param::DctShare,
                "DCT terms are added to IHT fits; IMP, the paper's baseline, fits the network \
                 alone (give --dct-share 0)",
            ));
        }
        if share > 0.0 && self.coords == Coords::Pixel {
            return Err(Error::invalid(
                Param::DctShare,
                "DCT terms are functions of unit coordinates; give --coords unit or \
                 --dct-share 0",
            ));
        }
        Ok(share)
    }
}

/// A time budget must be a finite number of seconds above 0.
fn check_time_budget(budget: Option<f64>) -> Result<Option<f64>> {
    match budget {
        Some(b) if !(b.is_finite() && b > 0.0) => Err(Error::invalid(
            Param::TimeBudget,
            format!("{b} must be a number of seconds above 0"),
        )),
        _ => Ok(budget),
    }
}

fn plain_candidates() -> f32 {
    1.0
}

fn whole_support() -> f32 {
    1.0
}

impl FitPlan {
    /// Nonzeros the backend must hold: `s`, or the candidates of an over-selecting fit.
    pub fn capacity(&self) -> usize {
        self.cfg.pool(self.spec.neurons * self.spec.features)
    }

    pub fn axes(&self) -> Vec<usize> {
        grid_axes(self.height, self.width, self.channels)
    }

    /// The sensing problem of the image: its Fourier features and its pixel values as targets.
    pub fn problem(&self, image: &Image) -> Result<Arc<Problem>> {
        let axes = self.axes();
        Ok(Arc::new(self.spec.problem(
            &axes,
            &axes,
            image.data.clone(),
        )?))
    }

    /// Host memory a fit of this plan will hold (`crate::budget`): the pixels and per-pixel
    /// state (image, targets, residuals, prediction, reconstruction, the DCT yardstick's
    /// planes), the sparse slots, and — when the features fit `feature_cache` bytes and the
    /// CPU backend caches them — the feature columns, the epoch's layout of them or a minibatch's
    /// copy, and the gate masks.
    pub fn host_memory(&self, feature_cache: u64) -> Estimate {
        let n = (self.height * self.width * self.channels) as u64;
        let (d, m, s) = (
            self.spec.features as u64,
            self.spec.neurons as u64,
            self.capacity() as u64,
        );
        let mut e = Estimate::default();
        e.add("spinr itself", crate::budget::BASE_BYTES);
        // f32: image, targets, 2 residuals, prediction, reconstruction; f64: 2 DCT planes;
        // the 8-bit PNG.
        e.add("per-pixel state", n * (6 * 4 + 2 * 8 + 1));
        e.add(
            "sparse weights",
            (crate::backend::Slot::COUNT as u64 + 4) * s * 8,
        );
        let features = crate::backend::cpu::column_bytes(n as usize, d as usize);
        if features <= feature_cache {
            e.add("cached features", features);
            if let Some(b) = self.largest_batch() {
                // An epoch's layout of the features where two copies fit the cache budget,
                // else a copy of each minibatch's.
                if crate::backend::cpu::epoch_layout_fits(n as usize, d as usize, feature_cache) {
                    e.add("epoch layout of the features", features);
                } else {
                    e.add(
                        "minibatch features",
                        crate::backend::cpu::column_bytes(b, d as usize),
                    );
                }
            }
            e.add("gate masks", m.min(2 * s + 64) * n.div_ceil(64) * 8);
        }
        if self.dct_terms > 0 {
            // The polish's targets without the terms: the host's and the backend's copy.
            e.add("polish targets", 2 * 4 * n);
        }
        e
    }

    /// Whether updates run on minibatches (the GPU then keeps features sample-major).
    pub fn minibatch(&self) -> bool {
        self.batch_size.is_some()
    }

    /// How the epoch loop visits the samples.
    pub fn schedule(&self) -> crate::train::Schedule {
        self.cfg.schedule(self.height * self.width * self.channels)
    }

    /// The largest minibatch of any epoch (`None`: full batch throughout).
    pub fn largest_batch(&self) -> Option<usize> {
        self.schedule().largest_batch()
    }
}

/// A finished fit: the best model, its reconstruction, and what ran it.
#[derive(Clone, Debug)]
pub struct ImageFit {
    pub model: ImageModel,
    /// The model's prediction clamped to [0, 1], at the fitted size.
    pub recon: Image,
    pub iterations: usize,
    pub stopped: bool,
    /// Wall time of the training itself.
    pub seconds: f64,
    pub backend: BackendInfo,
    pub peak_device_bytes: u64,
}

/// Fits `image` by IHT on `backend` (built for [`FitPlan::problem`]). `observe` sees every
/// epoch; `Break` stops after it, keeping the best model so far.
pub fn fit_iht(
    image: &Image,
    plan: &FitPlan,
    problem: &Problem,
    backend: &mut dyn Backend,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<ImageFit> {
    fit_iht_from(
        image,
        plan,
        problem,
        backend,
        None,
        observe,
        &mut NoCheckpoints,
    )
}

/// [`fit_iht`] from a checkpoint (`resume`, of this plan and image) or the start, saving
/// checkpoints when `checkpoints` asks. `seconds` then counts only this run's fitting.
pub fn fit_iht_from(
    image: &Image,
    plan: &FitPlan,
    problem: &Problem,
    backend: &mut dyn Backend,
    resume: Option<&Resume>,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
    checkpoints: &mut dyn Checkpointer,
) -> Result<ImageFit> {
    let start = Instant::now();
    // With DCT terms the polish fits the network to what its terms leave.
    let mut terms_left = super::terms::TermsLeft {
        image,
        k: plan.dct_terms,
    };
    let polish_targets = match plan.dct_terms {
        0 => None,
        _ => Some(&mut terms_left as &mut dyn iht::PolishTargets),
    };
    let fit: FitResult = iht::fit_from(
        backend,
        Some(problem),
        image.data.len(),
        &plan.cfg,
        resume,
        observe,
        checkpoints,
        polish_targets,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    // Evaluate the best model exactly as `spinr render` will: the network's prediction, its
    // DCT terms added, clamped.
    let mut data = super::predict_unclamped(backend, &fit.w, fit.gating)?;
    let dct = super::terms::DctTerms::of_residual(image, &data, plan.dct_terms)?;
    dct.add_to(
        (plan.height, plan.width),
        (plan.height, plan.width, plan.channels),
        &mut data,
    );
    super::clamp(&mut data);
    let recon = Image {
        data,
        ..image.clone()
    };
    let model = ImageModel {
        spec: plan.spec.clone(),
        height: plan.height,
        width: plan.width,
        channels: plan.channels,
        gating: fit.gating,
        w: fit.w,
        output: None,
        dct,
    };
    Ok(ImageFit {
        model,
        recon,
        iterations: fit.iterations,
        stopped: fit.stopped,
        seconds,
        backend: backend.info(),
        peak_device_bytes: backend.memory().peak_bytes,
    })
}

/// PSNR with peak 1, capped so that JSON always holds a number (an exact fit is 200 dB).
pub fn psnr(mse: f64) -> f64 {
    metrics::psnr_from_mse(mse, 1.0).min(200.0)
}

/// `report.json` of a fit. Rewritten while the fit runs (`status` "running"), then with the
/// results. Its keys are a contract (README, `--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitReport {
    /// "running", "done" or "stopped" (interrupted: the best model so far was saved).
    pub status: String,
    pub image: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub method: Method,
    pub variant: Variant,
    pub neurons: usize,
    pub features: usize,
    /// Nonzeros of the model: the network's weights and its DCT terms.
    pub nonzeros: usize,
    /// How many of `nonzeros` are DCT terms ([`super::terms`]; 0: the network alone).
    #[serde(default)]
    pub dct_terms: usize,
    /// Per grid axis: rows, columns[, channels].
    pub sigma: Vec<f64>,
    pub coords: Coords,
    pub constant_feature: bool,
    pub gates: GateMode,
    /// How the saved model gates (null while running).
    pub gating: Option<Gating>,
    pub seed: u64,
    pub gate_seed: u64,
    /// Epochs asked for (with a time budget, the count it planned last).
    pub iters: usize,
    /// Seconds given with `--time-budget` (null: none; the epochs were `iters`).
    #[serde(default)]
    pub time_budget: Option<f64>,
    /// Epochs run.
    pub iterations: usize,
    /// Samples per update (of the first epoch when batches grow); null = full batch.
    pub batch_size: Option<usize>,
    /// Samples per update of the last epoch (batches grow geometrically from `batch_size`);
    /// null = full batch.
    #[serde(default)]
    pub batch_size_end: Option<usize>,
    pub inner: usize,
    pub first_step: iht::FirstStep,
    pub refine: iht::Refine,
    /// Momentum β of the updates (0: none).
    #[serde(default)]
    pub momentum: f32,
    /// Candidates per update as a multiple of `nonzeros` (1: plain IHT; README, "Candidates").
    #[serde(default = "plain_candidates")]
    pub candidates: f32,
    /// The share of `nonzeros` the support started from, reached after 15% of the epochs
    /// (1: all from the first update; README, "Growing the support").
    #[serde(default = "whole_support")]
    pub grow_from: f32,
    /// PSNR (dB, peak 1) of the model's predictions clamped to [0, 1]; while running, of the
    /// best epoch so far. Capped at 200 dB (an exact fit).
    pub psnr: f64,
    /// PSNR of the 8-bit reconstruction.png.
    pub psnr_8bit: Option<f64>,
    /// PSNR of the best approximation of the image by as many DCT coefficients as the model
    /// has nonzeros: the classical yardstick at equal size.
    pub dct_psnr: Option<f64>,
    /// A luma-chroma fit's harder yardstick (null otherwise): the DCT with as many terms in
    /// the planes the fit uses as each plane's model has nonzeros
    /// ([`super::planes::planes_dct_of`]).
    #[serde(default)]
    pub dct_planes_psnr: Option<f64>,
    /// Mean SSIM; `None` when a side of the image has fewer than 2 pixels.
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
    /// How a colour image was fitted (null for gray).
    #[serde(default)]
    pub colour: Option<Colour>,
    /// A luma-chroma fit's planes (null otherwise); the fields above then describe the whole
    /// (`neurons` and `nonzeros` summed, `sigma`, `batch_size` and `iters` the luma plane's,
    /// `iterations` summed over the planes).
    #[serde(default)]
    pub planes: Option<Vec<PlaneReport>>,
    /// Where the feature frequencies came from: spectrum or gaussian.
    #[serde(default = "gaussian")]
    pub frequencies: Frequencies,
}

fn gaussian() -> Frequencies {
    Frequencies::Gaussian
}

/// One plane of a luma-chroma fit in `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneReport {
    /// luma, chroma-rb or chroma-gm ([`super::colour::PLANES`]).
    pub plane: String,
    /// The plane model's nonzeros, its DCT terms included.
    pub nonzeros: usize,
    /// How many of `nonzeros` are DCT terms.
    #[serde(default)]
    pub dct_terms: usize,
    pub neurons: usize,
    pub sigma: Vec<f64>,
    /// Epochs run.
    pub iterations: usize,
    /// PSNR of the plane (its values in [0, 1]).
    pub psnr: f64,
    /// PSNR of the plane's DCT with as many terms as it has nonzeros.
    #[serde(default)]
    pub dct_psnr: Option<f64>,
    pub seconds: f64,
    /// Where the plane's frequencies came from (by default the spectrum for luma, Gaussian
    /// for chroma).
    pub frequencies: Frequencies,
}

impl FitReport {
    /// The report of a fit about to start.
    pub fn start(image_name: &str, plan: &FitPlan, backend: &BackendInfo, out_dir: &str) -> Self {
        let spec = &plan.spec;
        FitReport {
            status: "running".into(),
            image: image_name.to_string(),
            height: plan.height,
            width: plan.width,
            channels: plan.channels,
            method: plan.method,
            variant: plan.variant,
            neurons: spec.neurons,
            features: spec.features,
            nonzeros: plan.cfg.s + plan.dct_terms,
            dct_terms: plan.dct_terms,
            sigma: spec.sigma.clone(),
            coords: spec.coords,
            constant_feature: spec.constant_feature,
            gates: spec.gates,
            gating: None,
            seed: spec.feature_seed,
            gate_seed: spec.gate_seed,
            iters: plan.cfg.iters,
            time_budget: plan.cfg.time_budget,
            iterations: 0,
            batch_size: plan.batch_size,
            batch_size_end: plan.schedule().batch_at(plan.cfg.iters.saturating_sub(1)),
            inner: plan.cfg.inner,
            first_step: plan.cfg.first_step,
            refine: plan.cfg.refine,
            momentum: plan.cfg.momentum,
            candidates: plan.cfg.candidates,
            grow_from: plan.cfg.grow_from,
            psnr: 0.0,
            psnr_8bit: None,
            dct_psnr: None,
            dct_planes_psnr: None,
            ssim: None,
            seconds: 0.0,
            backend: backend.kind.to_string(),
            adapter: backend.adapter.clone(),
            peak_device_bytes: 0,
            model_bytes: None,
            bits_per_pixel: None,
            stopped: false,
            out_dir: out_dir.to_string(),
            spinr_version: env!("CARGO_PKG_VERSION").to_string(),
            colour: (plan.channels == 3).then_some(Colour::ChannelAxis),
            planes: None,
            frequencies: Frequencies::of(&plan.spec),
        }
    }

    /// Fills in the results of a finished (or stopped) fit of `image`. `model_bytes`: the size
    /// of the saved model file, if one was written.
    pub fn finish(
        &mut self,
        image: &Image,
        fit: &ImageFit,
        model_bytes: Option<u64>,
    ) -> Result<()> {
        self.gating = Some(fit.model.gating);
        // IMP's pruned output weights are part of its size too.
        self.nonzeros = fit.model.nonzeros();
        self.dct_terms = fit.model.dct.len();
        self.iterations = fit.iterations;
        if self.time_budget.is_some() {
            self.iters = fit.iterations;
        }
        self.peak_device_bytes = fit.peak_device_bytes;
        self.quality(image, &fit.recon, fit.stopped, fit.seconds, model_bytes)
    }

    /// The status and what is measured on the reconstruction.
    pub(super) fn quality(
        &mut self,
        image: &Image,
        recon: &Image,
        stopped: bool,
        seconds: f64,
        model_bytes: Option<u64>,
    ) -> Result<()> {
        let (h, w, c) = (image.height, image.width, image.channels);
        self.status = if stopped { "stopped" } else { "done" }.into();
        self.stopped = stopped;
        self.psnr = psnr(metrics::mse(&recon.data, &image.data));
        self.psnr_8bit = Some(psnr(metrics::mse(&recon.quantized().data, &image.data)));
        self.ssim = metrics::ssim(&recon.data, &image.data, h, w, c);
        self.seconds = seconds;
        self.model_bytes = model_bytes;
        self.bits_per_pixel = model_bytes.map(|b| b as f64 * 8.0 / image.pixels() as f64);
        self.dct_psnr = Some(super::dct::dct_psnr(image, self.nonzeros.max(1))?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_batches_are_fine_from_8_samples_per_nonzero_above_128_squared() {
        assert_eq!(auto_growth(8192, 10), None, "full batch");
        // 128²: n/64 is the floor of 256 already.
        assert_eq!(auto_growth(16_384, 1000), Some((256, 4096)));
        assert_eq!(auto_growth(16_384, 10_000), Some((256, 4096)));
        assert!(!fine_batches(16_384, 100) && fine_batches(16_448, 100));
        // 256²: n/256 up to s = 8192, then n/64.
        assert_eq!(auto_growth(65_536, 3000), Some((256, 16_384)));
        assert_eq!(auto_growth(65_536, 8192), Some((256, 16_384)));
        assert_eq!(auto_growth(65_536, 8193), Some((1024, 16_384)));
        assert_eq!(auto_growth(65_536, 10_000), Some((1024, 16_384)));
        // 170 × 256 (a colour photo's planes): n/64 = 680, fine 256.
        assert_eq!(auto_growth(43_520, 1000), Some((256, 10_880)));
        // 512², s = 3000: n/256; the last batch is n/4, at most 65536.
        assert_eq!(auto_growth(262_144, 3000), Some((1024, 65_536)));
    }

    /// Fits with DCT terms polish at least two rounds (the terms are chosen again each
    /// round); without terms minibatch fits keep one, full-batch fits three, and `--polish`
    /// decides when given.
    #[test]
    fn fits_with_dct_terms_polish_two_rounds() {
        let image = |side: usize| Image {
            height: side,
            width: side,
            channels: 1,
            data: (0..side * side)
                .map(|i| {
                    (0.5 + 0.4 * ((i % side) as f32 * 0.3).sin()) * (i / side) as f32 / side as f32
                })
                .collect(),
        };
        let polish = |side: usize, change: &dyn Fn(&mut FitOptions)| {
            let mut o = FitOptions {
                nonzeros: 600,
                ..FitOptions::default()
            };
            change(&mut o);
            let plan = o.plan(&image(side)).unwrap();
            (
                plan.dct_terms,
                plan.cfg.batch_size.is_some(),
                plan.cfg.polish,
            )
        };
        assert_eq!(polish(100, &|_| ()), (100, true, 2));
        assert_eq!(polish(100, &|o| o.dct_share = Some(0.0)), (0, true, 1));
        assert_eq!(polish(100, &|o| o.iht.polish = Some(1)), (100, true, 1));
        assert_eq!(polish(100, &|o| o.coords = Coords::Pixel), (0, true, 1));
        assert_eq!(polish(64, &|_| ()), (100, false, 3));
    }

    #[test]
    fn the_spectrum_default_is_spinrs_iht_on_unit_coordinates() {
        use Frequencies::{Gaussian, Spectrum};
        for (method, variant, coords, want) in [
            (Method::Iht, Variant::Spinr, Coords::Unit, Spectrum),
            (Method::Iht, Variant::Spinr, Coords::Pixel, Gaussian),
            (Method::Iht, Variant::Paper, Coords::Unit, Gaussian),
            (Method::Imp, Variant::Spinr, Coords::Unit, Gaussian),
        ] {
            let got = default_frequencies(None, method, variant, coords);
            assert_eq!(got, want, "{method:?} {variant:?} {coords:?}");
        }
        let asked = default_frequencies(Some(Spectrum), Method::Imp, Variant::Paper, Coords::Pixel);
        assert_eq!(asked, Spectrum);
    }
}
