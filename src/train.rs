//! The epoch loop every trainer shares: minibatch order, one update per batch, evaluation on
//! all samples after each epoch, keep-best, and a per-epoch observer that may stop the loop.
//!
//! What an update *is* belongs to the [`Learner`]: an accelerated IHT step (`crate::iht`), an
//! Adam step of the dense baseline (`crate::imp`), or a classification step. The loop knows
//! nothing of backends or weights, so every trainer gets the same minibatch order for the same
//! seed, the same best-model rule and the same Ctrl-C behaviour.

use crate::error::{Error, Param, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::ops::ControlFlow;

/// One training method as the loop drives it.
pub trait Learner {
    /// One update on these samples (`None`: all samples, i.e. a full-batch epoch).
    fn update(&mut self, batch: Option<&[u32]>) -> Result<()>;
    /// The loss over all samples of the model as it will be used (after the epoch's updates).
    fn evaluate(&mut self) -> Result<f64>;
    /// Remembers the current model as the best so far (lowest evaluated loss).
    fn keep_best(&mut self) -> Result<()>;
    /// After the epoch's evaluation and keep-best: a chance to change course (e.g. leave a
    /// stall) before the next epoch.
    fn end_epoch(&mut self, _epoch: usize, _loss: f64) -> Result<()> {
        Ok(())
    }
}

/// How the samples are visited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Samples in the problem.
    pub n: usize,
    /// Epochs (passes over all samples).
    pub epochs: usize,
    /// Samples per update; `None` (or `≥ n`) = full batch, one update per epoch.
    pub batch_size: Option<usize>,
    /// Seed of the minibatch order.
    pub seed: u64,
}

impl Schedule {
    /// The batch size actually used: `None` when every update sees all samples.
    pub fn batch(&self) -> Option<usize> {
        self.batch_size.filter(|&b| b < self.n)
    }

    /// Updates per epoch.
    pub fn updates_per_epoch(&self) -> usize {
        self.batch().map_or(1, |b| self.n.div_ceil(b))
    }
}

/// Progress after one epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    /// The loss over all samples (`Learner::evaluate`).
    pub loss: f64,
    pub n: usize,
}

impl EpochReport {
    pub fn mse(&self) -> f64 {
        self.loss / self.n as f64
    }
}

/// What the loop did.
#[derive(Clone, Debug, Default)]
pub struct LoopOutcome {
    /// Lowest evaluated loss (the model `keep_best` saved); `None` if no epoch ran.
    pub best_loss: Option<f64>,
    /// Epochs run.
    pub epochs: usize,
    /// Updates run (epochs × batches).
    pub updates: usize,
    /// Whether the observer stopped the loop early.
    pub stopped: bool,
    /// Loss after each epoch.
    pub history: Vec<f64>,
}

/// Runs `schedule.epochs` epochs. `observe` sees every epoch's report; `Break` stops after it
/// (the best model is kept either way).
pub fn run(
    learner: &mut dyn Learner,
    schedule: &Schedule,
    mut observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<LoopOutcome> {
    if schedule.batch_size == Some(0) {
        return Err(Error::invalid(Param::BatchSize, "must be at least 1"));
    }
    let n = schedule.n;
    let batch = schedule.batch();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // One generator over the whole fit: epoch e's order depends on the orders before it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(schedule.seed ^ 0x5bd1_e995);
    let mut out = LoopOutcome::default();
    for epoch in 0..schedule.epochs {
        match batch {
            None => {
                learner.update(None)?;
                out.updates += 1;
            }
            Some(b) => {
                order.shuffle(&mut rng);
                for chunk in order.chunks(b) {
                    learner.update(Some(chunk))?;
                    out.updates += 1;
                }
            }
        }
        let loss = learner.evaluate()?;
        if !loss.is_finite() {
            return Err(Error::Diverged(format!(
                "the loss became {loss} after epoch {epoch}; check the data scale (targets and \
                 features should be of order 1)"
            )));
        }
        out.history.push(loss);
        out.epochs += 1;
        if out.best_loss.is_none_or(|l| loss < l) {
            learner.keep_best()?;
            out.best_loss = Some(loss);
        }
        learner.end_epoch(epoch, loss)?;
        if observe(&EpochReport { epoch, loss, n }).is_break() {
            out.stopped = true;
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the loop asks of it; the loss is a scripted sequence.
    struct Script {
        losses: Vec<f64>,
        evals: usize,
        batches: Vec<Option<Vec<u32>>>,
        best_at: Vec<usize>,
    }

    impl Learner for Script {
        fn update(&mut self, batch: Option<&[u32]>) -> Result<()> {
            self.batches.push(batch.map(|b| b.to_vec()));
            Ok(())
        }
        fn evaluate(&mut self) -> Result<f64> {
            self.evals += 1;
            Ok(self.losses[self.evals - 1])
        }
        fn keep_best(&mut self) -> Result<()> {
            self.best_at.push(self.evals - 1);
            Ok(())
        }
    }

    fn script(losses: &[f64]) -> Script {
        Script {
            losses: losses.to_vec(),
            evals: 0,
            batches: Vec::new(),
            best_at: Vec::new(),
        }
    }

    #[test]
    fn minibatches_cover_every_sample_once_per_epoch() {
        let mut l = script(&[3.0, 2.0]);
        let s = Schedule {
            n: 10,
            epochs: 2,
            batch_size: Some(4),
            seed: 7,
        };
        let out = run(&mut l, &s, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(out.updates, 6);
        assert_eq!(s.updates_per_epoch(), 3);
        for epoch in l.batches.chunks(3) {
            let mut seen: Vec<u32> = epoch.iter().flat_map(|b| b.clone().unwrap()).collect();
            assert_eq!(
                epoch.iter().map(|b| b.as_ref().unwrap().len()).max(),
                Some(4)
            );
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>());
        }
        // A different order in the second epoch.
        assert_ne!(l.batches[0], l.batches[3]);
    }

    #[test]
    fn keeps_the_best_epoch_and_stops_on_request() {
        let mut l = script(&[3.0, 1.0, 2.0, 0.5]);
        let s = Schedule {
            n: 5,
            epochs: 4,
            batch_size: None,
            seed: 0,
        };
        let out = run(&mut l, &s, |r| {
            if r.epoch == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert!(out.stopped);
        assert_eq!(out.epochs, 3);
        assert_eq!(l.best_at, vec![0, 1]);
        assert_eq!(out.best_loss, Some(1.0));
        assert!(l.batches.iter().all(|b| b.is_none()));
    }

    #[test]
    fn a_non_finite_loss_is_a_divergence_not_a_bad_flag() {
        let mut l = script(&[1.0, f64::NAN]);
        let s = Schedule {
            n: 5,
            epochs: 2,
            batch_size: Some(5),
            seed: 0,
        };
        let e = run(&mut l, &s, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, Error::Diverged(_)), "{e}");
        assert!(!e.is_bad_input());
    }
}
