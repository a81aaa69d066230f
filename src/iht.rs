//! The accelerated IHT loop (DESIGN.md §2), written once against [`Backend`].

use crate::backend::{Backend, GateSource, Slot};
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
    let mut f_v = backend.forward(Slot::V)?;
    let (gn, curv) = backend.step_size(Slot::V, Slot::G)?;
    let mut mu_r = (gn / (curv + 1e-8)) as f32;
    let (mut v, mut trial) = (Slot::V, Slot::TRIAL);
    let mut need_grad = false; // G already holds the gradient at v
    'inner: for _ in 0..cfg.inner {
        let mut tries = 0;
        if cfg.refine == Refine::Exact && need_grad {
            // Exact line search along the new gradient (one more support pass).
            let (gn, curv) = backend.step_size(v, Slot::G)?;
            mu_r = (gn / (curv + 1e-8)) as f32;
            need_grad = false;
        }
        loop {
            let (gnorm, f_t) = backend.trial(v, Slot::G, trial, mu_r, need_grad)?;
            need_grad = false;
            if gnorm == 0.0 {
                break 'inner; // stationary on this support
            }
            if f_t <= f_v - 0.9 * mu_r as f64 * gnorm {
                backend.accept_trial()?;
                std::mem::swap(&mut v, &mut trial);
                f_v = f_t;
                need_grad = true;
                break;
            }
            mu_r *= 0.5;
            tries += 1;
            if tries >= cfg.max_backtracks {
                // The paper's code: back to the thresholded vector, keep the reduced step.
                backend.copy(v, Slot::START)?;
                f_v = backend.forward(v)?;
                need_grad = true;
                break;
            }
        }
    }
    backend.copy(Slot::W, v)?;
    Ok(())
}
