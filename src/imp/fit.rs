//! The IMP loop: rounds of training (an Adam [`Learner`] in the shared epoch loop), global
//! magnitude pruning and rewinding (see the module docs of `crate::imp`).

use super::adam::AdamStep;
use super::mlp::{DenseMlp, MlpData, MlpShape};
use super::prune::{self, Masks};
use super::{ImpDevice, ImpModel, ImpOptions, ImpResult, RoundReport, RoundSummary};
use crate::error::{Error, Param, Result};
use crate::problem::Problem;
use crate::train::{self, Learner, Schedule};
use rand::{Rng, SeedableRng};
use std::ops::ControlFlow;
use std::time::Instant;

/// Progress after one epoch of a round.
#[derive(Clone, Copy, Debug)]
pub struct ImpEpoch {
    pub round: usize,
    pub epoch: usize,
    /// Mean training loss after the epoch.
    pub loss: f64,
    pub nonzeros: usize,
}

/// Adam on a dense network, as the epoch loop drives it.
struct AdamLearner<'m, 'a> {
    mlp: &'m mut (dyn DenseMlp + 'a),
    lr: f32,
    /// Adam steps taken this round.
    t: u32,
    full_batch: bool,
    /// The gradient in the network is the full-batch gradient at the current weights (left
    /// by `evaluate`), so the next full-batch update need not compute it again: one
    /// forward-backward per epoch gives both the epoch's loss and the next step.
    fresh: bool,
}

impl Learner for AdamLearner<'_, '_> {
    fn update(&mut self, batch: Option<&[u32]>) -> Result<()> {
        if !(batch.is_none() && self.fresh) {
            self.mlp.forward_backward(batch)?;
        }
        self.fresh = false;
        self.t += 1;
        self.mlp.adam_step(&AdamStep::new(self.t, self.lr))
    }

    fn evaluate(&mut self) -> Result<f64> {
        if self.full_batch {
            self.mlp.forward_backward(None)?;
            self.fresh = true;
            self.mlp.last_loss()
        } else {
            self.mlp.loss(None)
        }
    }

    /// IMP prunes the weights a round ends with (the paper's baseline), not its best epoch.
    fn keep_best(&mut self) -> Result<()> {
        Ok(())
    }
}

/// PyTorch's `nn.Linear(bias=False)` initialisation of `U` (`m×d`, bound `1/√d`) and `V`
/// (`m×C`, bound `1/√m`), drawn in that order from `StdRng::seed_from_u64(seed)`.
pub fn init_weights(shape: &MlpShape, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut draw = |len: usize, fan_in: usize| -> Vec<f32> {
        let b = (1.0 / (fan_in as f64).sqrt()) as f32;
        (0..len).map(|_| rng.random_range(-b..b)).collect()
    };
    let u = draw(shape.u_len(), shape.d);
    let v = draw(shape.v_len(), shape.m);
    (u, v)
}

fn validate(problem: &Problem, opts: &ImpOptions) -> Result<()> {
    problem.validate()?;
    crate::problem::check_sizes(problem.n, problem.d, opts.neurons)?;
    let total = opts.neurons * (problem.d + opts.loss.outputs());
    if opts.nonzeros == 0 || opts.nonzeros > total {
        return Err(Error::invalid(
            Param::Nonzeros,
            format!(
                "s = {} is out of range: it must be between 1 and m·d + m·C = {total}",
                opts.nonzeros
            ),
        ));
    }
    if opts.epochs == 0 {
        return Err(Error::invalid(
            Param::Iters,
            "IMP needs at least one epoch per round",
        ));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(Error::invalid(
            Param::LearningRate,
            format!("{} must be a positive number", opts.lr),
        ));
    }
    if opts.batch_size == Some(0) {
        return Err(Error::invalid(Param::BatchSize, "must be at least 1"));
    }
    prune::check_fraction(opts.prune_fraction)
}

/// Runs IMP on `problem` (see the module docs). `on_round` sees every trained round; `Break`
/// ends the run with that round.
pub fn fit(
    problem: &Problem,
    opts: &ImpOptions,
    device: &ImpDevice,
    on_round: impl FnMut(&RoundReport) -> ControlFlow<()>,
) -> Result<ImpResult> {
    fit_observed(
        problem,
        opts,
        device,
        |_| ControlFlow::Continue(()),
        on_round,
    )
}

/// [`fit`] with a per-epoch observer too: its `Break` ends the current round early (the round
/// is still reported) and then the run (Ctrl-C).
pub fn fit_observed(
    problem: &Problem,
    opts: &ImpOptions,
    device: &ImpDevice,
    on_epoch: impl FnMut(&ImpEpoch) -> ControlFlow<()>,
    on_round: impl FnMut(&RoundReport) -> ControlFlow<()>,
) -> Result<ImpResult> {
    fit_from(problem, opts, device, None, on_epoch, on_round, |_| Ok(()))
}

/// Where an IMP run stands between two rounds: the masks the next round trains (from the
/// rewound initial weights, with a fresh Adam), and what the rounds before it did. All a
/// resumed run needs: on the CPU it then ends bit for bit as the uninterrupted one.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpResume {
    /// The round about to run.
    pub round: usize,
    pub masks: Masks,
    pub rounds: Vec<RoundSummary>,
    /// Epochs run in all.
    pub epochs: usize,
}

/// [`fit_observed`] from a round boundary of an earlier run of the same problem and options
/// (`resume`) or from the start; `on_boundary` sees every boundary it reaches (a checkpoint).
pub fn fit_from(
    problem: &Problem,
    opts: &ImpOptions,
    device: &ImpDevice,
    resume: Option<ImpResume>,
    mut on_epoch: impl FnMut(&ImpEpoch) -> ControlFlow<()>,
    mut on_round: impl FnMut(&RoundReport) -> ControlFlow<()>,
    mut on_boundary: impl FnMut(&ImpResume) -> Result<()>,
) -> Result<ImpResult> {
    validate(problem, opts)?;
    let start = Instant::now();
    let c = opts.loss.outputs();
    let targets = opts.loss.targets(&problem.y)?;
    let data = MlpData {
        features: &problem.features,
        n: problem.n,
        d: problem.d,
        targets: &targets,
    };
    let mut mlp = device.mlp(data, opts.neurons, c, opts.feature_budget)?;
    let shape = mlp.shape();
    let (u0, v0) = init_weights(&shape, opts.seed);
    let (mut masks, mut rounds, mut epochs, mut round) = match resume {
        Some(r) => {
            if r.masks.u.len() != shape.u_len() || r.masks.v.len() != shape.v_len() {
                return Err(Error::invalid(
                    Param::Model,
                    "the saved masks do not match the network's shape",
                ));
            }
            (r.masks, r.rounds, r.epochs, r.round)
        }
        None => (Masks::full(shape.u_len(), shape.v_len()), Vec::new(), 0, 0),
    };
    // Host state beside the network: initial values, masks, one round's weights.
    let host_bytes = 8 * shape.weights() as u64 + masks.bytes();
    let (last_u, last_v, stopped) = loop {
        let t0 = Instant::now();
        let nonzeros = masks.count();
        mlp.set_mask(&masks.u, &masks.v)?;
        mlp.set_weights(&prune::rewind(&u0, &masks.u), &prune::rewind(&v0, &masks.v))?;
        mlp.reset_adam()?;
        let schedule = Schedule {
            n: problem.n,
            epochs: opts.epochs,
            batch_size: opts.batch_size,
            grow_to: None,
            seed: opts.seed.wrapping_add(round as u64),
        };
        let mut learner = AdamLearner {
            mlp: mlp.as_mut(),
            lr: opts.lr,
            t: 0,
            full_batch: schedule.batch().is_none(),
            fresh: false,
        };
        let n = problem.n as f64;
        let out = train::run(&mut learner, &schedule, |e| {
            on_epoch(&ImpEpoch {
                round,
                epoch: e.epoch,
                loss: e.loss / n,
                nonzeros,
            })
        })?;
        epochs += out.epochs;
        let loss = out.history.last().map_or(f64::NAN, |l| l / n);
        let (u, v) = mlp.weights()?;
        let seconds = t0.elapsed().as_secs_f64();
        rounds.push(RoundSummary {
            round,
            nonzeros,
            loss,
            epochs: out.epochs,
            seconds,
        });
        let report = RoundReport {
            round,
            nonzeros,
            loss,
            epochs: out.epochs,
            seconds,
            run_epochs: epochs,
            run_seconds: start.elapsed().as_secs_f64(),
            peak_device_bytes: peak_bytes(mlp.as_ref(), host_bytes),
            shape,
            u: &u,
            v: &v,
        };
        let brk = on_round(&report).is_break() || out.stopped;
        if nonzeros <= opts.nonzeros || brk {
            break (u, v, nonzeros > opts.nonzeros);
        }
        prune::prune(
            &u,
            &v,
            &mut masks,
            prune::prune_count(nonzeros, opts.prune_fraction),
        );
        round += 1;
        on_boundary(&ImpResume {
            round,
            masks: masks.clone(),
            rounds: rounds.clone(),
            epochs,
        })?;
    };
    let last = rounds.last().expect("at least one round ran");
    let peak = peak_bytes(mlp.as_ref(), host_bytes);
    let backend = mlp.info();
    Ok(ImpResult {
        model: ImpModel::from_dense(shape.d, shape.m, shape.c, &last_u, &last_v),
        nonzeros: last.nonzeros,
        loss: last.loss,
        stopped,
        epochs,
        seconds: start.elapsed().as_secs_f64(),
        peak_device_bytes: peak,
        backend,
        rounds,
    })
}

/// The network's peak bytes on its device; on the CPU the host's copies count too.
fn peak_bytes(mlp: &dyn DenseMlp, host_bytes: u64) -> u64 {
    let peak = mlp.memory().peak_bytes;
    if mlp.info().kind == "cpu" {
        peak + host_bytes
    } else {
        peak
    }
}
