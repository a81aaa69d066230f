//! Classification by IMP, the paper's baseline: the dense one-hidden-layer MLP of `crate::imp`
//! (MSE on 0/1 labels for binary, softmax cross-entropy for ten classes), pruned until at most
//! `s` weights remain. Its first round, the unpruned network, is the dense reference.

use super::binary::Trained;
use super::{ClassTask, ClassifyPlan, Layer, SparseNet};
use crate::data::Split;
use crate::error::{Error, Param, Result};
use crate::imp::{ImpDevice, ImpLoss, ImpModel, ImpOptions, RoundReport};
use crate::problem::{Features, GateMode, Problem};
use std::ops::ControlFlow;

/// The pruned network and the dense one it started from.
pub struct ImpTrained {
    pub trained: Trained,
    /// Round 0: the unpruned MLP after its epochs.
    pub dense: SparseNet,
}

/// One layer of a classifier from an IMP network (`U` sparse, `V` its outputs).
pub fn network(plan: &ClassifyPlan, model: &ImpModel) -> SparseNet {
    SparseNet {
        input_scale: plan.input_scale,
        layers: vec![Layer {
            m: model.m,
            d: model.d,
            w: model.u.clone(),
            output: Some(model.v.clone()),
        }],
    }
}

/// The loss of the task: MSE on 0/1 labels (one output) or softmax cross-entropy.
fn loss(plan: &ClassifyPlan, split: &Split) -> ImpLoss {
    match plan.task {
        ClassTask::Binary => ImpLoss::Mse,
        ClassTask::Multiclass => ImpLoss::CrossEntropy {
            classes: split.train.classes.max(split.test.classes),
        },
    }
}

/// Rounds the run trains (for a progress bar).
pub fn rounds(plan: &ClassifyPlan, split: &Split) -> usize {
    let total = plan.neurons * (split.train.d + loss(plan, split).outputs());
    crate::imp::prune::rounds(total, plan.nonzeros, ImpOptions::default().prune_fraction)
}

/// Trains and prunes the MLP on `split.train`; `on_round` sees every round (`Break` stops).
pub fn train(
    plan: &ClassifyPlan,
    split: &Split,
    device: &ImpDevice,
    on_round: impl FnMut(&RoundReport) -> ControlFlow<()>,
) -> Result<ImpTrained> {
    let (trained, dense) = train_from(plan, split, device, None, on_round, |_| Ok(()))?;
    Ok(ImpTrained {
        trained,
        dense: dense.expect("round 0 always runs from the start"),
    })
}

/// [`train`] from a round boundary of an earlier run (`resume`), `on_boundary` seeing each
/// boundary (checkpoints). The dense network (round 0) comes back only if round 0 ran.
pub fn train_from(
    plan: &ClassifyPlan,
    split: &Split,
    device: &ImpDevice,
    resume: Option<crate::imp::ImpResume>,
    mut on_round: impl FnMut(&RoundReport) -> ControlFlow<()>,
    on_boundary: impl FnMut(&crate::imp::ImpResume) -> Result<()>,
) -> Result<(Trained, Option<SparseNet>)> {
    if plan.layers != 1 {
        return Err(Error::invalid(
            Param::Layers,
            "IMP prunes one dense hidden layer: use --layers 1 with it",
        ));
    }
    let train = &split.train;
    let loss = loss(plan, split);
    let problem = Problem::new(
        train.d,
        plan.neurons,
        Features::Dense(plan.features(train)),
        train.labels.iter().map(|&l| l as f32).collect(),
        GateMode::Sequential,
        plan.seed,
    )?;
    let opts = ImpOptions {
        neurons: plan.neurons,
        nonzeros: plan.nonzeros,
        epochs: plan.epochs,
        batch_size: Some(plan.batch_size),
        seed: plan.seed,
        loss,
        ..Default::default()
    };
    let mut dense = None;
    let r = crate::imp::fit_from(
        &problem,
        &opts,
        device,
        resume,
        |_| ControlFlow::Continue(()),
        |r| {
            if r.round == 0 {
                dense = Some(r.model());
            }
            on_round(r)
        },
        on_boundary,
    )?;
    Ok((
        Trained {
            net: network(plan, &r.model),
            seconds: r.seconds,
            peak_device_bytes: r.peak_device_bytes,
            backend: r.backend,
            epochs: r.epochs,
            stopped: r.stopped,
        },
        dense.map(|d| network(plan, &d)),
    ))
}
