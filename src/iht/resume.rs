//! Stopping an IHT fit between two updates and going on later, bit for bit (ARCHITECTURE.md,
//! "Checkpoints").
//!
//! At every pause of the epoch loop (`train::run_from`) the learner is fully described by
//! [`IhtState`]: the weights `W`, the best model so far and a few counters. The gates need no
//! copy of their own: at a pause they are either the problem's random gates or, once they
//! follow the weights, `W`'s own (every update and every rescue ends by setting them from
//! `W`). Residuals, gate masks and feature columns are caches a backend rebuilds from these.

use super::{fit_result, polish_if_due, FitResult, Gating, IhtConfig, IhtLearner, PolishTargets};
use crate::backend::{Backend, GateSource, Slot};
use crate::error::Result;
use crate::pace::TimeBudget;
use crate::problem::Problem;
use crate::sparse::SparseVec;
use crate::train::{self, EpochReport, LoopState};
use std::ops::ControlFlow;

/// The learner's counters at a pause.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IhtCounters {
    /// `W` is still empty (the next step is the first).
    pub w_empty: bool,
    /// Updates run (sequential gates switch to the weights after the first).
    pub updates: usize,
    pub gating: Gating,
    pub best_gating: Gating,
    pub rescues: usize,
    /// A step size carried from update to update (the vector-output loop's μ; `None` for
    /// the scalar loop, whose step is recomputed every update).
    #[serde(default)]
    pub step: Option<f32>,
}

/// An IHT learner between two updates.
#[derive(Clone, Debug, PartialEq)]
pub struct IhtState {
    pub w: SparseVec,
    /// Slot `BEST` (meaningful once an epoch has been evaluated).
    pub best: SparseVec,
    pub counters: IhtCounters,
    /// `W` before the last update (momentum; empty without it).
    pub prev: SparseVec,
}

/// A point to go on from: where the loop stood and the learner's state there.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub at: LoopState,
    pub state: IhtState,
}

/// Decides when a fit saves its state, and saves it.
pub trait Checkpointer {
    /// Whether to save at this pause (reading the state back costs a copy of `W` and `BEST`).
    fn due(&mut self, at: &LoopState) -> bool;
    /// Saves the state; `Break` stops the fit here (an interrupt after its checkpoint).
    fn save(&mut self, at: &LoopState, state: IhtState) -> Result<ControlFlow<()>>;
}

/// Never saves.
pub struct NoCheckpoints;

impl Checkpointer for NoCheckpoints {
    fn due(&mut self, _: &LoopState) -> bool {
        false
    }
    fn save(&mut self, _: &LoopState, _: IhtState) -> Result<ControlFlow<()>> {
        Ok(ControlFlow::Continue(()))
    }
}

impl IhtLearner<'_> {
    /// The state at a pause of the epoch loop.
    pub fn state(&mut self) -> Result<IhtState> {
        Ok(IhtState {
            w: self.backend.read(Slot::W)?,
            best: self.backend.read(Slot::BEST)?,
            counters: IhtCounters {
                w_empty: self.w_empty,
                updates: self.updates,
                gating: self.gating,
                best_gating: self.best_gating,
                rescues: self.rescues,
                step: None,
            },
            prev: match self.holds_prev() {
                true => self.backend.read(Slot::PREV)?,
                false => SparseVec::new(),
            },
        })
    }

    /// Puts a freshly created learner where `state` was.
    pub fn restore(&mut self, state: &IhtState) -> Result<()> {
        let be = &mut *self.backend;
        be.set_batch(None)?;
        be.load(Slot::BEST, &state.best)?;
        be.load(Slot::W, &state.w)?;
        be.set_gates(match state.counters.gating {
            Gating::Random => GateSource::Random,
            Gating::SelfGated => GateSource::Slot(Slot::W),
        })?;
        let c = state.counters;
        self.w_empty = c.w_empty;
        if !state.prev.is_empty() {
            be.load(Slot::PREV, &state.prev)?;
        }
        self.updates = c.updates;
        self.gating = c.gating;
        self.best_gating = c.best_gating;
        self.rescues = c.rescues;
        self.batched = false;
        self.full_residual_current = false;
        Ok(())
    }
}

/// [`super::fit_with`] from a saved point (or the start), saving through `checkpoints` at the
/// pauses it asks for. A fit resumed from a state saved by an earlier run with the same
/// problem, configuration and backend ends exactly as that run would have (bit for bit on the
/// CPU backend). `polish_targets`: what the polish fits when the model is more than the
/// network ([`super::polish`]).
#[allow(clippy::too_many_arguments)]
pub fn fit_from(
    backend: &mut dyn Backend,
    problem: Option<&Problem>,
    n: usize,
    cfg: &IhtConfig,
    resume: Option<&Resume>,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
    checkpoints: &mut dyn Checkpointer,
    polish_targets: Option<&mut dyn PolishTargets>,
) -> Result<FitResult> {
    let schedule = cfg.schedule(n);
    let mut learner = IhtLearner::new(backend, cfg)?;
    if let Some(p) = problem {
        learner = learner.with_problem(p);
    }
    if let Some(r) = resume {
        learner.restore(&r.state)?;
    }
    // The polish after the last epoch: per round, its conjugate-gradient steps (a pass each
    // way) and two forward passes, each about an evaluation.
    let tail = (cfg.polish * (2 * super::POLISH_STEPS + 2)) as f64;
    let mut budget = cfg
        .time_budget
        .map(|b| TimeBudget::new(b, tail, crate::pace::wall_clock()));
    let out = train::run_paced(
        &mut learner,
        &schedule,
        resume.map(|r| r.at.clone()),
        budget.as_mut().map(|b| b as &mut dyn train::Pace),
        observe,
        |at, l| {
            if !checkpoints.due(at) {
                return Ok(ControlFlow::Continue(()));
            }
            let state = l.state()?;
            checkpoints.save(at, state)
        },
    )?;
    let gating = learner.best_gating();
    // A budget the epochs have already spent (one epoch took longer than all of it) leaves
    // nothing for the polish either.
    let time_left = !budget.as_mut().is_some_and(|b| b.spent());
    let loss = polish_if_due(backend, cfg, gating, &out, time_left, polish_targets)?;
    fit_result(backend, gating, loss, out)
}
