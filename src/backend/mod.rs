//! The compute backends behind one trait, so the CPU and the GPU share one IHT loop.
//!
//! A backend owns a handful of sparse-vector registers ([`Slot`]) and the residual of the
//! current iterate. The driver (`crate::iht`) sees only scalars: losses and norms. Vectors stay
//! in the backend (on the device for the GPU) for the whole fit.

pub mod cpu;
pub mod gpu;
pub mod profile;
pub mod vector;

pub use profile::{Ceilings, Device, GpuTimes, KernelTime, Profiler};

/// Grid features are materialised as a dense matrix (CPU memory, or device memory on the GPU)
/// when it takes at most this many bytes: the passes then load features instead of evaluating
/// sin/cos. Larger grids are generated on the fly.
pub const DEFAULT_FEATURE_CACHE: u64 = 1 << 30;

use crate::error::Result;
use crate::sparse::SparseVec;

/// One of the backend's sparse-vector registers. Each holds at most `s` (index, value) pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(pub u8);

impl Slot {
    /// Current weights `w`.
    pub const W: Slot = Slot(0);
    /// Refinement iterate.
    pub const V: Slot = Slot(1);
    /// Trial point of the Armijo line search.
    pub const TRIAL: Slot = Slot(2);
    /// Gradient on a support.
    pub const G: Slot = Slot(3);
    /// The thresholded vector the refinement starts from (reset target).
    pub const START: Slot = Slot(4);
    /// Best model so far (what Ctrl-C saves).
    pub const BEST: Slot = Slot(5);
    /// `W` before the last update, for momentum ([`Backend::momentum`]).
    pub const PREV: Slot = Slot(6);
    pub const COUNT: usize = 7;

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which gates the backend applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateSource {
    /// The problem's own random gates `g_j` (all open in Gaussian mode).
    Random,
    /// `h_j` = the current contents of this slot (sequential mode: the ReLU network).
    Slot(Slot),
}

/// The gates a backend has in force: every gate open (Gaussian sensing), the problem's random
/// gates, or the weights of a slot as they were when set, held as the backend keeps them (host
/// data on the CPU, a device copy on the GPU: `W = ()`). [`ActiveGates::resolve`] is the one
/// rule from the problem's [`GateMode`](crate::problem::GateMode) and a [`GateSource`].
#[derive(Clone, Debug, PartialEq)]
pub enum ActiveGates<W> {
    Open,
    Random,
    Weights(W),
}

impl<W> ActiveGates<W> {
    /// What `set_gates(source)` puts in force under `mode`; `weights` snapshots the slot.
    pub fn resolve(
        mode: crate::problem::GateMode,
        source: GateSource,
        weights: impl FnOnce(Slot) -> W,
    ) -> Self {
        match (source, mode) {
            (_, crate::problem::GateMode::Gaussian) => ActiveGates::Open,
            (GateSource::Random, _) => ActiveGates::Random,
            (GateSource::Slot(s), _) => ActiveGates::Weights(weights(s)),
        }
    }

    pub fn is_weights(&self) -> bool {
        matches!(self, ActiveGates::Weights(_))
    }
}

/// What a backend runs on, for reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackendInfo {
    /// "cpu" or "gpu".
    pub kind: &'static str,
    /// The adapter (GPU) or the CPU with its thread count.
    pub adapter: String,
}

/// Memory a backend holds for a fit, counted as it allocates.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MemoryStats {
    /// Largest number of bytes held at once (device buffers on the GPU).
    pub peak_bytes: u64,
    /// Bytes held now.
    pub current_bytes: u64,
    /// Of which the per-tile buffers of the dense pass (they grow with the tile, not with m).
    pub tile_bytes: u64,
}

/// Adds and frees byte counts; tracks the peak.
#[derive(Debug, Default)]
pub struct MemoryMeter {
    stats: MemoryStats,
}

impl MemoryMeter {
    pub fn alloc(&mut self, bytes: u64) {
        self.stats.current_bytes += bytes;
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.current_bytes);
    }
    pub fn free(&mut self, bytes: u64) {
        self.stats.current_bytes = self.stats.current_bytes.saturating_sub(bytes);
    }
    pub fn set_tile(&mut self, bytes: u64) {
        self.stats.tile_bytes = self.stats.tile_bytes.max(bytes);
    }
    pub fn stats(&self) -> MemoryStats {
        self.stats
    }
}

/// One exact refinement step as [`Backend::refine_exact`] ran it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefineStep {
    /// `‖g‖²` of the gradient at the step's start point.
    pub gn: f64,
    /// `‖A_S g‖²`.
    pub curv: f64,
    /// The step size `(gn / (curv + 1e-8)) as f32`.
    pub mu: f32,
    /// `f(v − μ g)`.
    pub f_t: f64,
    /// Whether the trial point became the iterate.
    pub accepted: bool,
}

impl RefineStep {
    /// The record of a step from its norms and trial loss, judged by [`armijo_accepts`] against
    /// the loss `f_v` at its start point.
    pub fn judged(gn: f64, curv: f64, mu: f32, f_t: f64, f_v: f64) -> Self {
        Self {
            gn,
            curv,
            mu,
            f_t,
            accepted: armijo_accepts(f_v, f_t, mu, gn),
        }
    }
}

/// The normalised step size `‖g‖² / (‖A_S g‖² + 1e-8)` in f32, from [`Backend::step_size`]'s
/// two halves.
pub fn normalised_step(gn: f64, curv: f64) -> f32 {
    (gn / (curv + 1e-8)) as f32
}

/// The Armijo test of the refinement: `f(t) ≤ f(v) − 0.9·μ·‖g‖²` (and a nonzero gradient).
pub fn armijo_accepts(f_v: f64, f_t: f64, mu: f32, gn: f64) -> bool {
    gn != 0.0 && f_t <= f_v - 0.9 * mu as f64 * gn
}

/// [`Backend::refine_exact`] in terms of the other trait methods (one `step_size` and one
/// `trial` per step, each read back): the default, and the reference the GPU's single-submission
/// version and the CPU's fused one are tested against.
pub fn refine_exact_host<B: Backend + ?Sized>(
    b: &mut B,
    v: Slot,
    g: Slot,
    trial: Slot,
    f_v: f64,
    steps: usize,
) -> Result<Vec<RefineStep>> {
    refine_host(b, (v, g, trial), f_v, None, false, steps)
}

/// [`Backend::refine_armijo`] in terms of the other trait methods (one `trial`, and for a
/// first normalised step one `step_size`, per step, each read back): the default, the CPU's
/// (whose trials along a held direction make it cheap), and the reference of the GPU's
/// single-submission version.
pub fn refine_armijo_host<B: Backend + ?Sized>(
    b: &mut B,
    q: (Slot, Slot, Slot),
    f_v: f64,
    mu: Option<f32>,
    steps: usize,
) -> Result<Vec<RefineStep>> {
    refine_host(b, q, f_v, mu, true, steps)
}

/// The host loop of both refinements: a step with no μ takes the normalised step at its
/// iterate (`step_size`, then the trial along that gradient); a step with μ recomputes the
/// gradient in its trial. `keep`: later steps keep the first step's μ (Armijo), else each
/// takes its own normalised step (exact).
fn refine_host<B: Backend + ?Sized>(
    b: &mut B,
    (v, g, trial): (Slot, Slot, Slot),
    mut f_v: f64,
    first: Option<f32>,
    keep: bool,
    steps: usize,
) -> Result<Vec<RefineStep>> {
    check_refine_slots(v, g, trial)?;
    let mut mu = first;
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let rec = match mu {
            None => {
                let (gn, curv) = b.step_size(v, g)?;
                let m = normalised_step(gn, curv);
                let (_, f_t) = b.trial(v, g, trial, m, false)?;
                RefineStep::judged(gn, curv, m, f_t, f_v)
            }
            Some(m) => {
                let (gn, f_t) = b.trial(v, g, trial, m, true)?;
                RefineStep::judged(gn, 0.0, m, f_t, f_v)
            }
        };
        mu = keep.then_some(rec.mu);
        out.push(rec);
        if !rec.accepted {
            break;
        }
        // The trial residual becomes current; the copy keeps the iterate in `v`.
        b.accept_trial()?;
        b.copy(v, trial)?;
        f_v = rec.f_t;
    }
    Ok(out)
}

/// How a refinement chooses each step's μ: [`Backend::refine_exact`] or
/// [`Backend::refine_armijo`], as [`Backend::refine_fresh`] takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepRule {
    /// The normalised step at every step (`refine_exact`).
    Exact,
    /// Armijo (`refine_armijo`): one μ for every step, the normalised step at the first
    /// (`None`) or the one given.
    Armijo(Option<f32>),
}

/// `refine_exact` overwrites `g` and `trial` while it reads `v`: three distinct slots.
pub(crate) fn check_refine_slots(v: Slot, g: Slot, trial: Slot) -> Result<()> {
    if v == g || v == trial || g == trial {
        return Err(crate::error::Error::invalid(
            crate::error::Param::Slot,
            "refine_exact needs three distinct slots",
        ));
    }
    Ok(())
}

/// Checks targets handed to [`Backend::set_targets`]: one finite value per sample.
pub(crate) fn check_targets(n: usize, y: &[f32]) -> Result<()> {
    if y.len() != n {
        return Err(crate::error::Error::invalid(
            crate::error::Param::Size,
            format!("{} targets for {n} samples", y.len()),
        ));
    }
    crate::error::check_finite("targets", y)
}

/// The operations of one accelerated IHT step (ARCHITECTURE.md, "The IHT step"). All products use the gates set by
/// [`Backend::set_gates`] and the samples set by [`Backend::set_batch`].
pub trait Backend {
    fn info(&self) -> BackendInfo;
    /// Entries of the whole signal, `m·d`.
    fn signal_len(&self) -> usize;

    /// Writes a host vector into a slot (indices sorted, at most `s` entries).
    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()>;
    /// Reads a slot back to the host (outside the hot loop).
    fn read(&mut self, slot: Slot) -> Result<SparseVec>;
    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()>;

    fn set_gates(&mut self, gates: GateSource) -> Result<()>;
    /// Restricts every product to these samples (minibatch); `None` = all samples.
    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()>;
    /// The coming minibatches are consecutive ranges of `order` (one epoch's shuffle). Only a
    /// hint: a backend may lay its samples out in this order once, so that each batch is a
    /// contiguous range rather than a gather; [`Backend::set_batch`] stays authoritative.
    fn arrange(&mut self, _order: &[u32]) -> Result<()> {
        Ok(())
    }

    /// Replaces the targets `y` of every sample (in the problem's sample order) with `y`, or
    /// restores the problem's own with `None`. What the residuals held were computed from is
    /// stale afterwards: the next pass starts with [`Backend::forward`]. Used after the epochs
    /// (an image's DCT terms: the polish fits the network to what the terms leave), so it
    /// may cost a copy of the `n` targets.
    fn set_targets(&mut self, y: Option<&[f32]>) -> Result<()>;

    /// `r = A v − y`, kept as the current residual; returns `‖r‖²`.
    fn forward(&mut self, v: Slot) -> Result<f64>;
    /// Momentum before an update: `W ← W + β·(W − PREV)` on `W`'s support
    /// ([`SparseVec::extrapolate`]), then `PREV ←` the `W` it started from; with `first`,
    /// only `PREV ← W`. The default goes through the host; a GPU keeps it on the device.
    fn momentum(&mut self, beta: f32, first: bool) -> Result<()> {
        let w = self.read(Slot::W)?;
        if !first {
            let prev = self.read(Slot::PREV)?;
            self.load(Slot::W, &w.extrapolate(&prev, beta))?;
        }
        self.load(Slot::PREV, &w)
    }
    /// [`Backend::forward`] without its loss: what an update needs before its step size. A
    /// GPU then submits the pass without waiting for it (no readback).
    fn residual(&mut self, v: Slot) -> Result<()> {
        self.forward(v).map(drop)
    }
    /// `g = A_Sᵀ r` on the support `S` of `v` (current residual) into `g`; returns
    /// `(‖g‖², ‖A_S g‖²)`, the two halves of the normalised step size.
    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)>;
    /// If `recompute_grad`, first `g = A_Sᵀ r` on the support of `v`. Then `dst = v − μ g` and
    /// the trial residual `r' = A dst − y`; returns `(‖g‖², ‖r'‖²)`. The current residual is
    /// unchanged until [`Backend::accept_trial`].
    fn trial(
        &mut self,
        v: Slot,
        g: Slot,
        dst: Slot,
        mu: f32,
        recompute_grad: bool,
    ) -> Result<(f64, f64)>;
    /// Makes the last trial residual the current one.
    fn accept_trial(&mut self) -> Result<()>;
    /// `g = A_Sᵀ r` on the support of `v` (current residual) into `g`; returns `‖g‖²`.
    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64>;
    /// `‖A_S p‖²` over the active samples (gates in force); nothing is stored.
    fn curvature(&mut self, p: Slot) -> Result<f64>;
    /// `dst = a + β·b` entry by entry; `a` and `b` must have the same support.
    fn combine(&mut self, dst: Slot, a: Slot, b: Slot, beta: f32) -> Result<()>;
    /// Up to `steps` exact refinement steps from `v` (gates and support fixed), each:
    /// `g = A_Sᵀ r` at `v` into `g`, `μ = (‖g‖² / (‖A_S g‖² + 1e-8)) as f32`,
    /// `trial = v − μ g` and `f(trial)`; accepted (`v ← trial`, its residual current) iff
    /// [`armijo_accepts`]`(f_v, f(trial), μ, ‖g‖²)`, `f_v` being the loss at `v` (updated on
    /// acceptance). Stops after the first step that is not accepted, leaving `v` and its residual
    /// unchanged and `g` holding the gradient at `v`. Returns one record per step run.
    ///
    /// Backends override it: the GPU runs the steps speculatively without reading back in
    /// between; the CPU takes one fused pass per step, carrying the residual and gradient by
    /// recurrence (equal in exact arithmetic, so its records agree to f32 rounding).
    fn refine_exact(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        refine_exact_host(self, v, g, trial, f_v, steps)
    }
    /// Up to `steps` Armijo refinement steps from `v` (gates and support fixed) with one step
    /// size: `mu`, or (`None`) the normalised step `(‖g‖² / (‖A_S g‖² + 1e-8)) as f32` at `v`,
    /// computed once. Each step: `g = A_Sᵀ r` at `v` into `g`, `trial = v − μ g`, `f(trial)`,
    /// accepted as in [`Backend::refine_exact`] (records of later steps carry `curv = 0`).
    /// Stops after the first step that is not accepted, leaving `v` and its residual unchanged
    /// and `g` holding the gradient at `v`, so the caller's backtracking can go on from there.
    ///
    /// The GPU runs the steps speculatively in one submission; the default is the host loop.
    fn refine_armijo(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        mu: Option<f32>,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        refine_armijo_host(self, (v, g, trial), f_v, mu, steps)
    }
    /// The refinement of a freshly made `v` whose loss the host does not have yet:
    /// `f(v)` ([`Backend::forward`], its residual current), then [`Backend::refine_exact`] or
    /// [`Backend::refine_armijo`] from that loss, as `rule` says. Returns `f(v)` and the
    /// records. The default makes the two calls; a GPU records the forward pass in the
    /// refinement's submission and reads the loss back with the records (one wait, not two).
    fn refine_fresh(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        rule: StepRule,
        steps: usize,
    ) -> Result<(f64, Vec<RefineStep>)> {
        let f_v = self.forward(v)?;
        let recs = match rule {
            StepRule::Exact => self.refine_exact(v, g, trial, f_v, steps)?,
            StepRule::Armijo(mu) => self.refine_armijo(v, g, trial, f_v, mu, steps)?,
        };
        Ok((f_v, recs))
    }
    /// The dense pass: `c = w − μ Aᵀ r` over all `m·d` entries (current residual, in tiles of
    /// neurons) and the `s` largest `|c|` (ties to the lower index) into `dst`.
    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()>;
    /// Steps 1 and 2 of an IHT step from `w`: the normalised step size on `w`'s support
    /// ([`Backend::step_size`] into `g`, [`normalised_step`]), then [`Backend::threshold`]
    /// with it. The default goes through the host; a GPU keeps μ on the device (its f32
    /// quotient may differ from the host's rounded f64 one in the last bit).
    fn threshold_normalised(&mut self, w: Slot, g: Slot, s: usize, dst: Slot) -> Result<()> {
        let (gn, curv) = self.step_size(w, g)?;
        self.threshold(w, normalised_step(gn, curv), s, dst)
    }
    /// The `s` largest `|v|` of slot `src` (ties to the lower index) into `dst`: the prune of
    /// an over-selecting step (`IhtConfig::candidates`). The default reads the slot back and
    /// loads the result: `O(candidates)` bytes each way, once per update.
    fn prune(&mut self, src: Slot, s: usize, dst: Slot) -> Result<()> {
        let v = self.read(src)?;
        self.load(dst, &v.largest(s))
    }

    /// `A v` on every sample, read back (evaluation and rendering only).
    fn predict(&mut self, v: Slot) -> Result<Vec<f32>>;

    fn memory(&self) -> MemoryStats;
}

/// Which backend the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Cpu,
    Gpu,
    Auto,
}

/// Creates the backend the user asked for. `auto` takes a real GPU if there is one and the CPU
/// otherwise; [`Backend::info`] tells which (the CLI says so on stderr). Fits use it as
/// `&mut dyn Backend` ([`Device::as_backend`]); its [`Profiler`] side serves `spinr bench`.
pub fn create(
    choice: BackendChoice,
    adapter: Option<&str>,
    problem: std::sync::Arc<crate::problem::Problem>,
    s: usize,
) -> Result<Box<dyn Device>> {
    create_for(choice, adapter, problem, s, false)
}

/// [`create`] for a fit that runs on minibatches (`minibatch`): the GPU then keeps its
/// features sample-major, which suits scattered samples (full-batch passes prefer
/// feature-major).
pub fn create_for(
    choice: BackendChoice,
    adapter: Option<&str>,
    problem: std::sync::Arc<crate::problem::Problem>,
    s: usize,
    minibatch: bool,
) -> Result<Box<dyn Device>> {
    let opts = gpu::GpuOptions {
        feature_major: !minibatch,
        ..Default::default()
    };
    create_with(choice, adapter, problem, s, opts, DEFAULT_FEATURE_CACHE)
}

/// [`create`] with the GPU backend's options and the CPU backend's feature cache (bytes of
/// features it may hold; a budget below the features' size means the row path).
pub fn create_with(
    choice: BackendChoice,
    adapter: Option<&str>,
    problem: std::sync::Arc<crate::problem::Problem>,
    s: usize,
    opts: gpu::GpuOptions,
    cpu_feature_cache: u64,
) -> Result<Box<dyn Device>> {
    let cpu = |problem| -> Result<Box<dyn Device>> {
        Ok(Box::new(cpu::CpuBackend::new(
            problem,
            s,
            cpu_feature_cache,
        )?))
    };
    match choice {
        BackendChoice::Cpu => cpu(problem),
        BackendChoice::Gpu => {
            let ctx = gpu::GpuContext::new(adapter, false)?;
            Ok(Box::new(gpu::GpuBackend::with_options(
                ctx, problem, s, opts,
            )?))
        }
        BackendChoice::Auto => match gpu::GpuContext::new(adapter, true) {
            Ok(ctx) => Ok(Box::new(gpu::GpuBackend::with_options(
                ctx, problem, s, opts,
            )?)),
            Err(_) => cpu(problem),
        },
    }
}
