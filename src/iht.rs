//! The accelerated IHT loop (DESIGN.md §2), written once against [`Backend`].

use crate::backend::{armijo_accepts, Backend, GateSource, Slot};
use crate::error::{Error, Result};
use crate::problem::GateMode;
use crate::sparse::SparseVec;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::ops::ControlFlow;

/// How the very first step (empty support) chooses its step size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FirstStep {
    /// The paper's `μ = 1e-14`: the first step only picks a support.
    Paper,
    /// Normalised step size on the support of the `s` largest gradient entries.
    Normalized,
}

/// How the refinement steps choose their step size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Refine {
    /// Normalised step size `‖g‖²/‖A g‖²` at every inner step (exact line search), Armijo as a
    /// safeguard. Converges faster per step; spinr's default.
    Exact,
    /// The paper's code: the normalised step once, then only halved by Armijo backtracking.
    Armijo,
}

#[derive(Clone, Debug)]
pub struct IhtConfig {
    /// Nonzeros `s`.
    pub s: usize,
    /// Epochs (full passes over the samples).
    pub iters: usize,
    /// Refinement steps `K` per IHT step.
    pub inner: usize,
    /// Samples per update; `None` = full batch.
    pub batch_size: Option<usize>,
    /// Seed of the minibatch order.
    pub seed: u64,
    pub gates: GateMode,
    pub first_step: FirstStep,
    pub refine: Refine,
    /// Armijo: halvings before the refinement resets to the thresholded vector.
    pub max_backtracks: usize,
}

impl IhtConfig {
    pub fn new(s: usize, iters: usize, gates: GateMode) -> Self {
        Self {
            s,
            iters,
            inner: if gates == GateMode::Gaussian { 3 } else { 10 },
            batch_size: None,
            seed: 0,
            gates,
            first_step: FirstStep::Paper,
            refine: Refine::Exact,
            max_backtracks: 11,
        }
    }
}

/// How a fitted model is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gating {
    /// The problem's random gates (convex mode, or sequential before its first gate update).
    Random,
    /// `h_j = w_j`: the ReLU network `Σ_j relu(w_j · x)`.
    #[serde(rename = "relu")]
    SelfGated,
}

/// Progress after one epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    /// `‖A w − y‖²` over all samples with the gates the model is evaluated with.
    pub loss: f64,
    pub n: usize,
}

impl EpochReport {
    pub fn mse(&self) -> f64 {
        self.loss / self.n as f64
    }
}

#[derive(Clone, Debug)]
pub struct FitResult {
    /// The best model seen (lowest full loss), which is the last one unless a later step got worse.
    pub w: SparseVec,
    pub gating: Gating,
    pub loss: f64,
    /// Epochs run.
    pub iterations: usize,
    /// IHT updates run (epochs × minibatches).
    pub updates: usize,
    /// Whether a stop request ended the fit early.
    pub stopped: bool,
    /// Full loss after each epoch.
    pub history: Vec<f64>,
}

/// Runs the fit. `observe` is called after every epoch; `Break` stops early, keeping the best.
pub fn fit(
    backend: &mut dyn Backend,
    n: usize,
    cfg: &IhtConfig,
    mut observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<FitResult> {
    if cfg.s == 0 {
        return Err(Error::arg("--nonzeros", "s must be at least 1"));
    }
    if cfg.batch_size == Some(0) {
        return Err(Error::arg("--batch-size", "must be at least 1"));
    }
    let batch = cfg.batch_size.filter(|&b| b < n);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0x5bd1_e995);

    backend.set_gates(GateSource::Random)?;
    backend.set_batch(None)?;
    backend.load(Slot::W, &SparseVec::new())?;
    let mut gating = Gating::Random;
    let mut w_empty = true;
    let mut t = 0usize; // update counter
    let mut best: Option<(f64, Gating)> = None;
    let mut history = Vec::with_capacity(cfg.iters);
    let mut stopped = false;
    // Full-batch loss of W with the current gates, when the current residual holds it.
    let mut known_loss: Option<f64> = None;

    for epoch in 0..cfg.iters {
        let batches: Vec<Option<Vec<u32>>> = match batch {
            None => vec![None],
            Some(b) => {
                order.shuffle(&mut rng);
                order.chunks(b).map(|c| Some(c.to_vec())).collect()
            }
        };
        for b in &batches {
            // Full batch: the epoch's evaluation left W's residual current; no need to redo it.
            if b.is_some() {
                backend.set_batch(b.as_deref())?;
                backend.forward(Slot::W)?;
            } else if known_loss.take().is_none() {
                backend.forward(Slot::W)?;
            }
            step(backend, cfg, w_empty)?;
            w_empty = false;
            if cfg.gates == GateMode::Sequential && t >= 1 {
                backend.set_gates(GateSource::Slot(Slot::W))?;
                gating = Gating::SelfGated;
            }
            t += 1;
        }
        // Evaluate the model as it will be used: all samples, current gates.
        if batch.is_some() {
            backend.set_batch(None)?;
        }
        let loss = backend.forward(Slot::W)?;
        known_loss = Some(loss);
        if !loss.is_finite() {
            return Err(Error::arg(
                "--iters",
                "the fit diverged (non-finite loss); check the data scale",
            ));
        }
        history.push(loss);
        if best.is_none_or(|(l, _)| loss < l) {
            backend.copy(Slot::BEST, Slot::W)?;
            best = Some((loss, gating));
        }
        let report = EpochReport { epoch, loss, n };
        if observe(&report).is_break() {
            stopped = true;
            break;
        }
    }
    let (loss, gating) = best.unwrap_or((f64::INFINITY, gating));
    Ok(FitResult {
        w: backend.read(Slot::BEST)?,
        gating,
        loss,
        iterations: history.len(),
        updates: t,
        stopped,
        history,
    })
}

/// One accelerated IHT step from `W` (whose residual is current) into `W`.
pub fn step(backend: &mut dyn Backend, cfg: &IhtConfig, w_empty: bool) -> Result<()> {
    // 1. Normalised step size on the support.
    let mu = if w_empty {
        match cfg.first_step {
            FirstStep::Paper => 1e-14,
            FirstStep::Normalized => {
                // Support of the s largest gradient entries, then the exact line-search step.
                backend.threshold(Slot::W, 1.0, cfg.s, Slot::V)?;
                let (gn, curv) = backend.step_size(Slot::V, Slot::G)?;
                (gn / (curv + 1e-8)) as f32
            }
        }
    } else {
        let (gn, curv) = backend.step_size(Slot::W, Slot::G)?;
        (gn / (curv + 1e-8)) as f32
    };
    // 2. Dense pass + top-s.
    backend.threshold(Slot::W, mu, cfg.s, Slot::V)?;
    backend.copy(Slot::START, Slot::V)?;
    // 3. Refinement with Armijo backtracking on the new support, gates fixed.
    let f_v = backend.forward(Slot::V)?;
    let v = match cfg.refine {
        Refine::Exact => refine_exact(backend, cfg, f_v)?,
        Refine::Armijo => refine_armijo(backend, cfg, f_v)?,
    };
    backend.copy(Slot::W, v)?;
    Ok(())
}

/// What the refinement does after a rejected trial.
enum Backtrack {
    /// Stationary on this support: the refinement is over.
    Stop,
    /// An accepted trial or a reset to the thresholded vector ended the inner step; the
    /// gradient at `v` must be recomputed.
    Done,
}

/// Armijo backtracking after the trial at `*mu_r` from `*v` failed (`G` holds the gradient at
/// `*v`): halve `μ` and retry; after `max_backtracks` failures the paper's reset to the
/// thresholded vector (keeping the reduced step).
fn backtrack(
    backend: &mut dyn Backend,
    cfg: &IhtConfig,
    v: &mut Slot,
    trial: &mut Slot,
    f_v: &mut f64,
    mu_r: &mut f32,
) -> Result<Backtrack> {
    let mut tries = 0;
    loop {
        *mu_r *= 0.5;
        tries += 1;
        if tries >= cfg.max_backtracks {
            backend.copy(*v, Slot::START)?;
            *f_v = backend.forward(*v)?;
            return Ok(Backtrack::Done);
        }
        let (gnorm, f_t) = backend.trial(*v, Slot::G, *trial, *mu_r, false)?;
        if gnorm == 0.0 {
            return Ok(Backtrack::Stop);
        }
        if armijo_accepts(*f_v, f_t, *mu_r, gnorm) {
            backend.accept_trial()?;
            std::mem::swap(v, trial);
            *f_v = f_t;
            return Ok(Backtrack::Done);
        }
    }
}

/// `Refine::Exact`: the normalised step at every inner step. Runs of accepted steps go to
/// [`Backend::refine_exact`] in one call (one submission on the GPU); only a rejected step
/// comes back to the host for backtracking. Returns the slot holding the result.
fn refine_exact(backend: &mut dyn Backend, cfg: &IhtConfig, mut f_v: f64) -> Result<Slot> {
    let (mut v, mut trial) = (Slot::V, Slot::TRIAL);
    let mut done = 0;
    while done < cfg.inner {
        let recs = backend.refine_exact(v, Slot::G, trial, f_v, cfg.inner - done)?;
        let Some(last) = recs.last() else {
            break;
        };
        done += recs.len();
        if let Some(r) = recs.iter().rev().find(|r| r.accepted) {
            f_v = r.f_t;
        }
        if last.accepted {
            continue;
        }
        if last.gn == 0.0 {
            break; // stationary on this support
        }
        // The rejected step's inner iteration goes on with the halved step.
        let mut mu_r = last.mu;
        if let Backtrack::Stop = backtrack(backend, cfg, &mut v, &mut trial, &mut f_v, &mut mu_r)? {
            break;
        }
    }
    Ok(v)
}

/// `Refine::Armijo`, the paper's code: the normalised step once, then only halved.
fn refine_armijo(backend: &mut dyn Backend, cfg: &IhtConfig, mut f_v: f64) -> Result<Slot> {
    let (gn, curv) = backend.step_size(Slot::V, Slot::G)?;
    let mut mu_r = (gn / (curv + 1e-8)) as f32;
    let (mut v, mut trial) = (Slot::V, Slot::TRIAL);
    for it in 0..cfg.inner {
        // After the first inner step (accepted or reset) the gradient at v is stale.
        let (gnorm, f_t) = backend.trial(v, Slot::G, trial, mu_r, it > 0)?;
        if gnorm == 0.0 {
            break; // stationary on this support
        }
        if armijo_accepts(f_v, f_t, mu_r, gnorm) {
            backend.accept_trial()?;
            std::mem::swap(&mut v, &mut trial);
            f_v = f_t;
            continue;
        }
        if let Backtrack::Stop = backtrack(backend, cfg, &mut v, &mut trial, &mut f_v, &mut mu_r)? {
            break;
        }
    }
    Ok(v)
}
