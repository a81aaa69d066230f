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
    /// Before the updates of `epoch` of `epochs` (also when a resumed loop goes on within
    /// it). `epochs` is the schedule's count, which a [`Pace`] may change between epochs.
    fn begin_epoch(&mut self, _epoch: usize, _epochs: usize) -> Result<()> {
        Ok(())
    }
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
    /// The epoch's minibatches will be consecutive ranges of `order` (its shuffle): a hint
    /// that lets a backend lay the samples out once per epoch instead of gathering each batch.
    fn arrange(&mut self, _order: &[u32]) -> Result<()> {
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
    /// Samples per update (of the first epoch when batches grow); `None` (or `≥ n`) = full
    /// batch, one update per epoch.
    pub batch_size: Option<usize>,
    /// Samples per update of the last epoch: batches grow geometrically from `batch_size`
    /// to it, epoch by epoch (`None`: every epoch uses `batch_size`). Many small, noisy
    /// updates find a support fast; larger ones later settle it (ARCHITECTURE.md, "The IHT
    /// step").
    pub grow_to: Option<usize>,
    /// Seed of the minibatch order.
    pub seed: u64,
}

impl Schedule {
    /// The first epoch's batch size actually used: `None` when every update sees all samples.
    pub fn batch(&self) -> Option<usize> {
        self.batch_at(0)
    }

    /// The batch size of `epoch`: `b0·(b1/b0)^(e/(E−1))` rounded when batches grow; `None`
    /// once it reaches all samples.
    pub fn batch_at(&self, epoch: usize) -> Option<usize> {
        let b0 = self.batch_size?;
        let b = match self.grow_to {
            Some(b1) if self.epochs > 1 && b1 != b0 => {
                let t = epoch.min(self.epochs - 1) as f64 / (self.epochs - 1) as f64;
                let ratio = b1 as f64 / b0 as f64;
                ((b0 as f64 * ratio.powf(t)).round() as usize).max(1)
            }
            _ => b0,
        };
        (b < self.n).then_some(b)
    }

    /// The largest minibatch of any epoch (`None`: every epoch is full batch).
    pub fn largest_batch(&self) -> Option<usize> {
        (0..self.epochs.max(1))
            .filter_map(|e| self.batch_at(e))
            .max()
    }

    /// Updates in `epoch`.
    pub fn updates_in(&self, epoch: usize) -> usize {
        self.batch_at(epoch).map_or(1, |b| self.n.div_ceil(b))
    }
}

/// Progress after one epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    /// Epochs the loop now plans in all (the schedule's, or a [`Pace`]'s latest count).
    pub epochs: usize,
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

/// Where the loop stands between two updates: with the learner's own state, all it takes to
/// go on from there exactly as if it had never stopped (a checkpoint).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopState {
    /// The epoch in progress (epochs finished so far).
    pub epoch: usize,
    /// Updates of that epoch already run (0 at an epoch boundary).
    pub batch: usize,
    /// Updates run in all.
    pub updates: usize,
    /// Lowest evaluated loss so far.
    pub best_loss: Option<f64>,
    /// Loss after each finished epoch.
    pub history: Vec<f64>,
    /// The epoch count a [`Pace`] last planned (`None`: the schedule's own), so that a
    /// resumed loop goes on with the batches it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<usize>,
}

/// Runs `schedule.epochs` epochs. `observe` sees every epoch's report; `Break` stops after it
/// (the best model is kept either way).
pub fn run<L: Learner + ?Sized>(
    learner: &mut L,
    schedule: &Schedule,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
) -> Result<LoopOutcome> {
    run_from(learner, schedule, None, observe, |_, _| {
        Ok(ControlFlow::Continue(()))
    })
}

/// [`run`] from a saved point (`start`, from a checkpoint of this schedule) or from the
/// beginning, with a `pause` between updates: after every update but an epoch's last, and
/// after each epoch's evaluation and `observe`. A pause may save the learner (a checkpoint)
/// and may stop the loop there (`Break`); the [`LoopState`] it sees is exactly what
/// `start` needs to continue from that point.
pub fn run_from<L: Learner + ?Sized>(
    learner: &mut L,
    schedule: &Schedule,
    start: Option<LoopState>,
    observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
    pause: impl FnMut(&LoopState, &mut L) -> Result<ControlFlow<()>>,
) -> Result<LoopOutcome> {
    run_paced(learner, schedule, start, None, observe, pause)
}

/// Re-plans a loop's epoch count as it goes (`crate::pace::TimeBudget`: a wall-clock budget).
/// Epochs already run keep the batch sizes they had; the batches and the learner's
/// per-epoch settings of the epochs to come follow the new count.
pub trait Pace {
    /// `epoch` is about to run its `updates` updates.
    fn start_epoch(&mut self, epoch: usize, updates: usize);
    /// Its updates are done; the evaluation on all samples follows.
    fn updates_done(&mut self);
    /// After the evaluation of `epoch`: the epochs to run in all, at least `epoch + 1`
    /// (`epoch + 1`: stop here). `schedule` is the loop's, with its current count.
    fn plan(&mut self, epoch: usize, schedule: &Schedule) -> usize;
}

/// [`run_from`] whose epoch count a `pace` may change after every epoch.
pub fn run_paced<L: Learner + ?Sized>(
    learner: &mut L,
    schedule: &Schedule,
    start: Option<LoopState>,
    mut pace: Option<&mut dyn Pace>,
    mut observe: impl FnMut(&EpochReport) -> ControlFlow<()>,
    mut pause: impl FnMut(&LoopState, &mut L) -> Result<ControlFlow<()>>,
) -> Result<LoopOutcome> {
    let mut schedule = *schedule;
    if schedule.batch_size == Some(0) {
        return Err(Error::invalid(Param::BatchSize, "must be at least 1"));
    }
    let n = schedule.n;
    let mut at = start.unwrap_or_default();
    if let Some(e) = at.planned {
        schedule.epochs = e;
    }
    if at.epoch > schedule.epochs
        || at.batch >= schedule.updates_in(at.epoch)
        || at.history.len() != at.epoch
        || (at.epoch == schedule.epochs && at.batch > 0)
    {
        return Err(Error::invalid(
            Param::Iters,
            format!(
                "cannot resume at epoch {} update {} of a schedule of {} epochs ({} updates in \
                 that epoch)",
                at.epoch,
                at.batch,
                schedule.epochs,
                schedule.updates_in(at.epoch)
            ),
        ));
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    // One generator over the whole fit: epoch e's order depends on the orders before it, so a
    // resumed loop replays the shuffles of the epochs it skips.
    let mut rng = rand::rngs::StdRng::seed_from_u64(schedule.seed ^ 0x5bd1_e995);
    for e in 0..at.epoch {
        if schedule.batch_at(e).is_some() {
            order.shuffle(&mut rng);
        }
    }
    // `at` is the loop's one record of where it stands; the outcome is read off it.
    let mut stopped = false;
    'epochs: while at.epoch < schedule.epochs {
        let epoch = at.epoch;
        learner.begin_epoch(epoch, schedule.epochs)?;
        if let Some(p) = pace.as_deref_mut() {
            p.start_epoch(epoch, schedule.updates_in(epoch));
        }
        match schedule.batch_at(epoch) {
            None => {
                learner.update(None)?;
                at.updates += 1;
            }
            Some(b) => {
                // Also when resumed mid-epoch: the epoch's order is the next shuffle, and
                // the updates it already ran are skipped.
                order.shuffle(&mut rng);
                learner.arrange(&order)?;
                let chunks: Vec<&[u32]> = order.chunks(b).collect();
                for (k, chunk) in chunks.iter().enumerate().skip(at.batch) {
                    learner.update(Some(chunk))?;
                    at.updates += 1;
                    if k + 1 < chunks.len() {
                        at.batch = k + 1;
                        if pause(&at, learner)?.is_break() {
                            stopped = true;
                            break 'epochs;
                        }
                    }
                }
            }
        }
        if let Some(p) = pace.as_deref_mut() {
            p.updates_done();
        }
        let loss = learner.evaluate()?;
        if !loss.is_finite() {
            return Err(Error::Diverged(format!(
                "the loss became {loss} after epoch {epoch}; check the data scale (targets and \
                 features should be of order 1)"
            )));
        }
        at.history.push(loss);
        if at.best_loss.is_none_or(|l| loss < l) {
            learner.keep_best()?;
            at.best_loss = Some(loss);
        }
        learner.end_epoch(epoch, loss)?;
        at.epoch = epoch + 1;
        at.batch = 0;
        if let Some(p) = pace.as_deref_mut() {
            schedule.epochs = p.plan(epoch, &schedule).max(epoch + 1);
            at.planned = Some(schedule.epochs);
        }
        let seen = observe(&EpochReport {
            epoch,
            epochs: schedule.epochs,
            loss,
            n,
        });
        if pause(&at, learner)?.is_break() || seen.is_break() {
            stopped = true;
            break;
        }
    }
    Ok(LoopOutcome {
        best_loss: at.best_loss,
        epochs: at.epoch,
        updates: at.updates,
        stopped,
        history: at.history,
    })
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
            grow_to: None,
            seed: 7,
        };
        let out = run(&mut l, &s, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(out.updates, 6);
        assert_eq!(s.updates_in(0), 3);
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
            grow_to: None,
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
    fn a_run_resumed_from_any_pause_continues_exactly() {
        let s = Schedule {
            n: 10,
            epochs: 4,
            batch_size: Some(3),
            grow_to: None,
            seed: 11,
        };
        let points = resumes_exactly(&s);
        // Three pauses inside each epoch of four updates, one after it.
        assert_eq!(points, 4 * 4);
        let bad = LoopState {
            epoch: 2,
            batch: 9,
            ..Default::default()
        };
        assert!(run_from(
            &mut script(&[5.0, 2.0, 3.0, 1.0]),
            &s,
            Some(bad),
            |_| ControlFlow::Continue(()),
            |_, _| { Ok(ControlFlow::Continue(())) }
        )
        .is_err());
    }

    #[test]
    fn growing_batches_cover_every_sample_and_resume_exactly() {
        let s = Schedule {
            n: 10,
            epochs: 4,
            batch_size: Some(2),
            grow_to: Some(16),
            seed: 3,
        };
        // 2·8^(e/3): 2, 4, 8, then 16 ≥ n, a full-batch epoch.
        let sizes: Vec<_> = (0..4).map(|e| s.batch_at(e)).collect();
        assert_eq!(sizes, [Some(2), Some(4), Some(8), None]);
        assert_eq!(
            (0..4).map(|e| s.updates_in(e)).collect::<Vec<_>>(),
            [5, 3, 2, 1]
        );
        assert_eq!(s.largest_batch(), Some(8));
        let mut l = script(&[4.0, 3.0, 2.0, 1.0]);
        run(&mut l, &s, |_| ControlFlow::Continue(())).unwrap();
        let mut at = 0;
        for (e, &k) in [5, 3, 2].iter().enumerate() {
            let epoch = &l.batches[at..at + k];
            at += k;
            let mut seen: Vec<u32> = epoch.iter().flat_map(|b| b.clone().unwrap()).collect();
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>(), "epoch {e}");
            assert!(epoch
                .iter()
                .all(|b| b.as_ref().unwrap().len() <= sizes[e].unwrap()));
        }
        assert_eq!(l.batches[at..], [None]);
        // 4 + 2 + 1 pauses inside the minibatch epochs, one after each epoch.
        assert_eq!(resumes_exactly(&s), 7 + 4);
        // A fixed size and a one-epoch schedule do not grow.
        let one = Schedule { epochs: 1, ..s };
        assert_eq!(one.batch_at(0), Some(2));
        let fixed = Schedule { grow_to: None, ..s };
        assert_eq!(fixed.batch_at(3), Some(2));
    }

    /// Stops `s` at every pause and resumes it with a fresh learner: the updates, losses and
    /// best model must be the uninterrupted run's. Returns the number of pauses.
    fn resumes_exactly(s: &Schedule) -> usize {
        let s = *s;
        let losses = [5.0, 2.0, 3.0, 1.0];
        let mut full = script(&losses);
        let mut points = Vec::new();
        let whole = run_from(
            &mut full,
            &s,
            None,
            |_| ControlFlow::Continue(()),
            |at, _| {
                points.push(at.clone());
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
        for at in points.iter().filter(|a| a.epoch < s.epochs) {
            // The first run stops at this pause; a new learner goes on from there.
            let mut first = script(&losses);
            let stopped = run_from(
                &mut first,
                &s,
                None,
                |_| ControlFlow::Continue(()),
                |p, _| {
                    Ok(if p == at {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .unwrap();
            assert!(stopped.stopped);
            let mut rest = script(&losses);
            rest.evals = at.epoch;
            let out = run_from(
                &mut rest,
                &s,
                Some(at.clone()),
                |_| ControlFlow::Continue(()),
                |_, _| Ok(ControlFlow::Continue(())),
            )
            .unwrap();
            let mut batches = first.batches.clone();
            batches.extend(rest.batches.iter().cloned());
            assert_eq!(batches, full.batches, "resumed at {at:?}");
            assert_eq!(out.history, whole.history);
            assert_eq!(out.best_loss, whole.best_loss);
            assert_eq!((out.epochs, out.updates), (whole.epochs, whole.updates));
        }
        points.len()
    }

    /// Plans the counts it is given, one per epoch, and records the epoch's update counts.
    struct Planned {
        counts: Vec<usize>,
        updates: Vec<usize>,
    }

    impl Pace for Planned {
        fn start_epoch(&mut self, _epoch: usize, updates: usize) {
            self.updates.push(updates);
        }
        fn updates_done(&mut self) {}
        fn plan(&mut self, epoch: usize, _: &Schedule) -> usize {
            self.counts[epoch]
        }
    }

    #[test]
    fn a_pace_re_plans_the_epochs_to_come_and_a_resume_keeps_its_plan() {
        let s = Schedule {
            n: 64,
            epochs: 3,
            batch_size: Some(2),
            grow_to: Some(32),
            seed: 5,
        };
        let losses = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0];
        // 3 epochs planned, then 7, then 5 (after epoch 0 and 1), 5 kept.
        let counts = vec![7, 5, 5, 5, 5];
        let run_paced_from =
            |l: &mut Script, start: Option<LoopState>, stop: Option<&LoopState>| {
                let mut pace = Planned {
                    counts: counts.clone(),
                    updates: Vec::new(),
                };
                let mut seen = Vec::new();
                let out = run_paced(
                    l,
                    &s,
                    start,
                    Some(&mut pace),
                    |r| {
                        seen.push(r.epochs);
                        ControlFlow::Continue(())
                    },
                    |at, _| {
                        Ok(match stop {
                            Some(p) if p == at => ControlFlow::Break(()),
                            _ => ControlFlow::Continue(()),
                        })
                    },
                )
                .unwrap();
                (out, pace.updates, seen)
            };
        let mut whole = script(&losses);
        let (out, updates, seen) = run_paced_from(&mut whole, None, None);
        assert_eq!(out.epochs, 5);
        assert_eq!(seen, [7, 5, 5, 5, 5]);
        // Epoch 0 ran under 3 epochs (2 → 32 over 3 epochs), epoch 1 under 7, the rest under 5:
        // every epoch's batches are those of the count in force when it ran.
        let under = |epochs: usize, e: usize| Schedule { epochs, ..s }.updates_in(e);
        assert_eq!(
            updates,
            [
                under(3, 0),
                under(7, 1),
                under(5, 2),
                under(5, 3),
                under(5, 4)
            ]
        );
        assert_eq!(updates.iter().sum::<usize>(), out.updates);
        assert_eq!(whole.batches.len(), out.updates);
        // Stopped inside epoch 2 and resumed with a fresh learner: the same batches.
        let mut pauses = Vec::new();
        run_paced(
            &mut script(&losses),
            &s,
            None,
            Some(&mut Planned {
                counts: counts.clone(),
                updates: Vec::new(),
            }),
            |_| ControlFlow::Continue(()),
            |at, _| {
                pauses.push(at.clone());
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
        let at = pauses
            .iter()
            .find(|a| a.epoch == 2 && a.batch == 1)
            .unwrap()
            .clone();
        assert_eq!(at.planned, Some(5));
        let mut first = script(&losses);
        run_paced_from(&mut first, None, Some(&at));
        let mut rest = script(&losses);
        rest.evals = at.epoch;
        let (out2, _, _) = run_paced_from(&mut rest, Some(at), None);
        first.batches.extend(rest.batches);
        assert_eq!(first.batches, whole.batches);
        assert_eq!(out2.history, out.history);
    }

    #[test]
    fn a_non_finite_loss_is_a_divergence_not_a_bad_flag() {
        let mut l = script(&[1.0, f64::NAN]);
        let s = Schedule {
            n: 5,
            epochs: 2,
            batch_size: Some(5),
            grow_to: None,
            seed: 0,
        };
        let e = run(&mut l, &s, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, Error::Diverged(_)), "{e}");
        assert!(!e.is_bad_input());
    }
}
