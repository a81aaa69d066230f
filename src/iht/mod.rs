//! The accelerated IHT step (ARCHITECTURE.md, "The IHT step"), written once against
//! [`Backend`], and [`IhtLearner`], which lets the shared epoch loop (`crate::train`) drive it.

use crate::backend::{armijo_accepts, normalised_step, Backend, GateSource, Slot, StepRule};
use crate::error::{Error, Param, Result};
use crate::problem::{GateMode, Problem};
use crate::sparse::SparseVec;
use crate::train::{Learner, LoopOutcome};
use std::ops::ControlFlow;

mod config;
mod resume;
pub mod vector;

pub use config::*;
pub use resume::{fit_from, Checkpointer, IhtCounters, IhtState, NoCheckpoints, Resume};

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

pub use crate::train::EpochReport;

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

/// IHT as a [`Learner`] of the shared epoch loop: each update is one accelerated IHT step
/// from slot `W` into `W`; the best model goes to slot `BEST`.
pub struct IhtLearner<'a> {
    backend: &'a mut dyn Backend,
    cfg: &'a IhtConfig,
    /// `W` is still empty (the first step picks a support).
    w_empty: bool,
    /// Updates run (the gate rule of sequential mode counts them).
    updates: usize,
    gating: Gating,
    best_gating: Gating,
    /// The last update ran on a minibatch (evaluation must switch back to all samples).
    batched: bool,
    /// The current residual is `W`'s over all samples with the current gates (full batch:
    /// the evaluation's forward pass serves the next step).
    full_residual_current: bool,
    /// The problem, for rescues (they need a sample's features).
    problem: Option<&'a Problem>,
    /// Rescues done.
    pub rescues: usize,
    /// The configuration of the current epoch's updates when its support is still growing
    /// (`s` = [`IhtConfig::support_at`] the epoch), set once per epoch; `None`: `cfg` itself.
    growing: Option<IhtConfig>,
}

impl<'a> IhtLearner<'a> {
    /// Resets the backend to an empty `W` with random gates on all samples.
    pub fn new(backend: &'a mut dyn Backend, cfg: &'a IhtConfig) -> Result<Self> {
        if cfg.s == 0 {
            return Err(Error::invalid(Param::Nonzeros, "s must be at least 1"));
        }
        backend.set_gates(GateSource::Random)?;
        backend.set_batch(None)?;
        backend.load(Slot::W, &SparseVec::new())?;
        Ok(Self {
            backend,
            cfg,
            w_empty: true,
            updates: 0,
            gating: Gating::Random,
            best_gating: Gating::Random,
            batched: false,
            full_residual_current: false,
            problem: None,
            rescues: 0,
            growing: None,
        })
    }

    /// Whether slot `PREV` holds `W` before the last update: momentum ran in an earlier update.
    fn holds_prev(&self) -> bool {
        self.cfg.momentum > 0.0 && self.updates > MOMENTUM_FROM
    }

    /// How the best model so far gates.
    pub fn best_gating(&self) -> Gating {
        self.best_gating
    }

    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Gives the learner the problem so that it can rescue uncovered samples.
    pub fn with_problem(mut self, problem: &'a Problem) -> Self {
        self.problem = Some(problem);
        self
    }

    /// Samples the ReLU network cannot reach: every neuron switched off there (prediction 0)
    /// while the target is positive. No gradient flows to such a sample, so IHT stalls on it
    /// for good (on the digit grid, one pixel 2/255 off caps a fit at 71 dB). For each such
    /// sample that carries at least 1% of the loss (the worst first, at most
    /// [`RESCUES_PER_CHECK`]), nudges the neuron closest to switching on there, on its own
    /// support (no new nonzeros): `w_j += c·x_i` restricted to the support, `c` chosen so that
    /// `x_i·w_j` becomes slightly positive. The next steps then see the sample's residual.
    fn rescue(&mut self, problem: &Problem, loss: f64) -> Result<usize> {
        let be = &mut *self.backend;
        let pred = be.predict(Slot::W)?;
        let mut stuck: Vec<(usize, f64)> = pred
            .iter()
            .zip(&problem.y)
            .enumerate()
            .filter(|(_, (&p, &y))| p <= 0.0 && y > p)
            .map(|(i, (&p, &y))| (i, (y as f64 - p as f64).powi(2)))
            .filter(|&(_, e)| e >= 0.01 * loss)
            .collect();
        if stuck.is_empty() {
            return Ok(0);
        }
        stuck.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut w = be.read(Slot::W)?;
        let d = problem.d;
        let runs = w.neuron_runs(d);
        let mut x = vec![0f32; d];
        let mut nudged = 0;
        for &(i, _) in stuck.iter().take(RESCUES_PER_CHECK) {
            problem.fill_row(i, &mut x);
            // The neuron whose pre-activation at sample i is closest to zero.
            let best = runs
                .iter()
                .map(|(_, r)| {
                    let (mut pre, mut norm) = (0f64, 0f64);
                    for p in r.clone() {
                        let xk = x[w.indices[p] as usize % d] as f64;
                        pre += xk * w.values[p] as f64;
                        norm += xk * xk;
                    }
                    (r, pre, norm)
                })
                .filter(|&(_, pre, norm)| norm > 0.0 && pre <= 0.0)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((run, pre, norm)) = best else {
                continue;
            };
            // Just past zero: a tenth of the distance beyond it.
            let target = 0.1 * pre.abs().max(1e-12);
            let c = (target - pre) / norm;
            for p in run.clone() {
                let xk = x[w.indices[p] as usize % d] as f64;
                w.values[p] = (w.values[p] as f64 + c * xk) as f32;
            }
            nudged += 1;
        }
        if nudged > 0 {
            be.load(Slot::W, &w)?;
            be.set_gates(GateSource::Slot(Slot::W))?;
            self.full_residual_current = false;
            self.rescues += nudged;
        }
        Ok(nudged)
    }
}

/// Updates run before momentum keeps `w_prev`: the first two run on random gates, the third
/// is the first on the network's own gates; the fourth records its `w` as the first `w_prev`,
/// and the fifth is the first to start from an extrapolation.
const MOMENTUM_FROM: usize = 3;

/// Samples rescued at most per check (see `IhtLearner::rescue`).
pub const RESCUES_PER_CHECK: usize = 8;
/// Epochs between rescue checks.
pub const RESCUE_EVERY: usize = 5;

impl Learner for IhtLearner<'_> {
    fn begin_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()> {
        let s = self.cfg.support_in(epoch, epochs);
        self.growing = (s < self.cfg.s).then(|| IhtConfig {
            s,
            ..self.cfg.clone()
        });
        Ok(())
    }

    fn update(&mut self, batch: Option<&[u32]>) -> Result<()> {
        let first = !self.holds_prev();
        let be = &mut *self.backend;
        // Momentum: start this update from w + β·(w − w_prev). The gates follow the weights
        // (sequential) or stay random; either way they are set again from `W` below.
        if self.cfg.momentum > 0.0 && self.updates >= MOMENTUM_FROM {
            be.momentum(self.cfg.momentum, first)?;
            if !first {
                if self.gating == Gating::SelfGated {
                    be.set_gates(GateSource::Slot(Slot::W))?;
                }
                self.full_residual_current = false;
            }
        }
        match batch {
            Some(_) => {
                be.set_batch(batch)?;
                be.residual(Slot::W)?;
                self.batched = true;
            }
            None => {
                if self.batched {
                    be.set_batch(None)?;
                    self.batched = false;
                }
                if !self.full_residual_current {
                    be.residual(Slot::W)?;
                }
            }
        }
        step(be, self.growing.as_ref().unwrap_or(self.cfg), self.w_empty)?;
        self.w_empty = false;
        self.full_residual_current = false;
        if self.cfg.gates == GateMode::Sequential && self.updates >= 1 {
            be.set_gates(GateSource::Slot(Slot::W))?;
            self.gating = Gating::SelfGated;
        }
        self.updates += 1;
        Ok(())
    }

    fn evaluate(&mut self) -> Result<f64> {
        // The model as it will be used: all samples, current gates.
        if self.batched {
            self.backend.set_batch(None)?;
            self.batched = false;
        }
        let loss = self.backend.forward(Slot::W)?;
        self.full_residual_current = true;
        Ok(loss)
    }

    fn arrange(&mut self, order: &[u32]) -> Result<()> {
        self.backend.arrange(order)
    }

    fn keep_best(&mut self) -> Result<()> {
        self.backend.copy(Slot::BEST, Slot::W)?;
        self.best_gating = self.gating;
        Ok(())
    }

    fn end_epoch(&mut self, epoch: usize, loss: f64) -> Result<()> {
        let Some(problem) = self.problem else {
            return Ok(());
        };
        if self.cfg.rescue && self.gating == Gating::SelfGated && epoch % RESCUE_EVERY == 4 {
            self.rescue(problem, loss)?;
        }
        Ok(())
    }
}

/// Runs the fit on all `n` samples of the backend's problem. `observe` is called after every
/// epoch; `Break` stops early, keeping the best.
pub fn fit(
    backend: &mut dyn Backend,
    n: usize,
    cfg: &IhtConfig,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<FitResult> {
    fit_with(backend, None, n, cfg, observe)
}

/// [`fit`] with the problem at hand, which rescues need (`IhtConfig::rescue`).
pub fn fit_with(
    backend: &mut dyn Backend,
    problem: Option<&Problem>,
    n: usize,
    cfg: &IhtConfig,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<FitResult> {
    fit_from(
        backend,
        problem,
        n,
        cfg,
        None,
        observe,
        &mut NoCheckpoints,
        None,
    )
}

/// After the epochs: the polish rounds where they apply (ReLU gating, not stopped, `time_left`
/// of a time budget; a minibatch fit's polish runs over all samples). Returns the best loss.
fn polish_if_due(
    backend: &mut dyn Backend,
    cfg: &IhtConfig,
    gating: Gating,
    out: &LoopOutcome,
    time_left: bool,
    targets: Option<&mut dyn PolishTargets>,
) -> Result<f64> {
    let loss = out.best_loss.unwrap_or(f64::INFINITY);
    if cfg.polish > 0 && gating == Gating::SelfGated && !out.stopped && time_left {
        return polish(backend, cfg, loss, targets);
    }
    Ok(loss)
}

/// What the polish fits the network to when the model is more than the network
/// (ARCHITECTURE.md, "Polish"): a part fitted to the network's residual (an image's DCT
/// terms) is chosen again for each round's network, and the round fits the network to what
/// that part leaves of the targets. Each round then lowers the loss of the whole model.
pub trait PolishTargets {
    /// The targets of the next round, given the network's prediction on every sample
    /// (unclamped, in the problem's sample order).
    fn targets(&mut self, prediction: &[f32]) -> Result<Vec<f32>>;
}

fn fit_result(
    backend: &mut dyn Backend,
    gating: Gating,
    loss: f64,
    out: LoopOutcome,
) -> Result<FitResult> {
    Ok(FitResult {
        w: backend.read(Slot::BEST)?,
        gating,
        loss,
        iterations: out.epochs,
        updates: out.updates,
        stopped: out.stopped,
        history: out.history,
    })
}

/// Polishes the best ReLU network (slot `BEST`, loss `best`): with the gates it has, the fit
/// is a linear least-squares problem on its support, which conjugate gradients solve far
/// better than the few refinement steps each IHT step has; then the gates follow the new
/// weights and the next round goes on. Keeps a round only if the ReLU network's loss drops.
/// Returns the best loss. With `targets`, each round fits the targets they give for `BEST`
/// (its loss is taken against them), the last round's loss is returned, and the problem's
/// own targets are restored at the end.
pub fn polish(
    backend: &mut dyn Backend,
    cfg: &IhtConfig,
    mut best: f64,
    mut targets: Option<&mut dyn PolishTargets>,
) -> Result<f64> {
    let cg = IhtConfig {
        inner: POLISH_STEPS,
        ..cfg.clone()
    };
    backend.set_batch(None)?;
    for _ in 0..cfg.polish {
        backend.copy(Slot::V, Slot::BEST)?;
        backend.set_gates(GateSource::Slot(Slot::V))?;
        if let Some(t) = targets.as_deref_mut() {
            let y = t.targets(&backend.predict(Slot::V)?)?;
            backend.set_targets(Some(&y))?;
        }
        let f_v = backend.forward(Slot::V)?;
        if targets.is_some() {
            best = f_v;
        }
        let v = refine_cg(backend, &cg, f_v)?;
        backend.set_gates(GateSource::Slot(v))?;
        let f = backend.forward(v)?;
        if f.is_nan() || f >= best {
            break;
        }
        backend.copy(Slot::BEST, v)?;
        best = f;
    }
    if targets.is_some() {
        backend.set_targets(None)?;
    }
    Ok(best)
}

/// One accelerated IHT step from `W` (whose residual is current) into `W`.
pub fn step(backend: &mut dyn Backend, cfg: &IhtConfig, w_empty: bool) -> Result<()> {
    // 1. Normalised step size on the support, and 2. the dense pass + top-s with it, or the
    // top candidates when the step over-selects (the first step picks exactly `s`: it has
    // no values to compete with).
    let pool = if w_empty {
        cfg.s
    } else {
        cfg.pool(backend.signal_len())
    };
    if w_empty {
        let mu = match cfg.first_step {
            FirstStep::Paper => 1e-14,
            FirstStep::Normalized => {
                // Support of the s largest gradient entries, then the exact line-search step.
                backend.threshold(Slot::W, 1.0, cfg.s, Slot::V)?;
                let (gn, curv) = backend.step_size(Slot::V, Slot::G)?;
                normalised_step(gn, curv)
            }
        };
        backend.threshold(Slot::W, mu, cfg.s, Slot::V)?;
    } else {
        backend.threshold_normalised(Slot::W, Slot::G, pool, Slot::V)?;
    }
    // 3. Refinement with Armijo backtracking on the new support, gates fixed.
    let mut v = refine_from_v(backend, cfg)?;
    if pool > cfg.s {
        // 4. Prune the refined candidates to the `s` largest and refine those.
        backend.prune(v, cfg.s, Slot::V)?;
        v = refine_from_v(backend, cfg)?;
    }
    backend.copy(Slot::W, v)?;
    Ok(())
}

/// The refinement of the support in slot `V`, which is also the reset point (`START`) of
/// Armijo backtracking. Returns the slot holding the result.
fn refine_from_v(backend: &mut dyn Backend, cfg: &IhtConfig) -> Result<Slot> {
    backend.copy(Slot::START, Slot::V)?;
    match cfg.refine {
        Refine::Exact => refine_chained(backend, cfg, StepRule::Exact),
        Refine::Armijo => refine_chained(backend, cfg, StepRule::Armijo(None)),
        Refine::Cg => {
            let f_v = backend.forward(Slot::V)?;
            refine_cg(backend, cfg, f_v)
        }
    }
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

/// `Refine::Cg`: conjugate gradients for `min ‖A_S v − y‖²` on the new support with the
/// step's gates, `K` steps from the thresholded vector. Slot `START` holds the direction.
fn refine_cg(backend: &mut dyn Backend, cfg: &IhtConfig, mut f_v: f64) -> Result<Slot> {
    let (mut v, mut trial) = (Slot::V, Slot::TRIAL);
    let dir = Slot::START;
    let mut gn_prev = 0.0;
    let mut conjugate = false;
    let mut it = 0;
    while it < cfg.inner {
        let gn = backend.gradient(v, Slot::G)?;
        if gn == 0.0 {
            break;
        }
        if conjugate {
            backend.combine(dir, Slot::G, dir, (gn / gn_prev) as f32)?;
        } else {
            backend.copy(dir, Slot::G)?;
        }
        let curv = backend.curvature(dir)?;
        let alpha = (gn / (curv + 1e-30)) as f32;
        let (_, f_t) = backend.trial(v, dir, trial, alpha, false)?;
        if f_t < f_v {
            backend.accept_trial()?;
            std::mem::swap(&mut v, &mut trial);
            f_v = f_t;
            gn_prev = gn;
            conjugate = true;
        } else if conjugate {
            // Rounding broke conjugacy: restart from the gradient at the same point.
            conjugate = false;
        } else {
            break; // not even the gradient step helps: done on this support
        }
        it += 1;
    }
    Ok(v)
}

/// `Refine::Exact` (the normalised step at every inner step) or `Refine::Armijo` (the paper's
/// code: the normalised step once, then only halved) from the thresholded vector in `V`.
/// Runs of accepted steps go to the backend in one call (one submission on the GPU, the first
/// with the forward pass that gives the loss at `V`: [`Backend::refine_fresh`]); a rejected
/// step comes back to the host for backtracking. Returns the slot holding the result.
fn refine_chained(backend: &mut dyn Backend, cfg: &IhtConfig, rule: StepRule) -> Result<Slot> {
    let (mut v, mut trial) = (Slot::V, Slot::TRIAL);
    let (mut f_v, mut recs) = backend.refine_fresh(v, Slot::G, trial, rule, cfg.inner)?;
    let mut rule = rule;
    let mut done = 0;
    while let Some(&last) = recs.last() {
        done += recs.len();
        if let Some(r) = recs.iter().rev().find(|r| r.accepted) {
            f_v = r.f_t;
        }
        let mut mu_r = last.mu;
        if !last.accepted {
            if last.gn == 0.0 {
                break; // stationary on this support
            }
            // The rejected step's inner iteration goes on with the halved step.
            if let Backtrack::Stop =
                backtrack(backend, cfg, &mut v, &mut trial, &mut f_v, &mut mu_r)?
            {
                break;
            }
        }
        // Armijo goes on with the batch's μ, halved by any backtracking.
        if let StepRule::Armijo(_) = rule {
            rule = StepRule::Armijo(Some(mu_r));
        }
        if done >= cfg.inner {
            break;
        }
        recs = match rule {
            StepRule::Exact => backend.refine_exact(v, Slot::G, trial, f_v, cfg.inner - done)?,
            StepRule::Armijo(mu) => {
                backend.refine_armijo(v, Slot::G, trial, f_v, mu, cfg.inner - done)?
            }
        };
    }
    Ok(v)
}
