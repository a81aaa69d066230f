//! IMP, the paper's baseline, on an image: its options from a fit plan, its rounds' networks as
//! [`ImageFit`]s, and image model files of IMP networks (re-exported by `inr::fit`).

use super::fit::{FitPlan, ImageFit};
use super::{Image, ImageModel, InrSpec};
use crate::backend::BackendInfo;
use crate::error::{Error, Param, Result};
use crate::iht::Gating;
use crate::problem::{GateMode, Problem};
use std::ops::ControlFlow;

/// IMP's settings for an image fit: `plan.cfg.iters` epochs per round, the plan's batches.
pub fn imp_options(plan: &FitPlan) -> crate::imp::ImpOptions {
    crate::imp::ImpOptions {
        neurons: plan.spec.neurons,
        nonzeros: plan.cfg.s,
        epochs: plan.cfg.iters,
        batch_size: plan.batch_size,
        seed: plan.spec.feature_seed,
        ..Default::default()
    }
}

/// What an IMP run had done when it reached a network: the [`ImageFit`] fields that are not
/// the network.
#[derive(Clone, Debug)]
pub struct ImpRunSoFar {
    pub seconds: f64,
    pub epochs: usize,
    pub stopped: bool,
    pub peak_device_bytes: u64,
    pub backend: BackendInfo,
}

/// The [`ImageFit`] of one IMP round's network.
pub fn imp_image_fit(
    image: &Image,
    plan: &FitPlan,
    problem: &Problem,
    model: &crate::imp::ImpModel,
    device: &crate::imp::ImpDevice,
    run: ImpRunSoFar,
) -> Result<ImageFit> {
    let mut data = model.predict(&problem.features, problem.n, device)?;
    for v in &mut data {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(ImageFit {
        model: ImageModel::from_imp(model, &plan.spec, plan.height, plan.width, plan.channels)?,
        recon: Image {
            data,
            ..image.clone()
        },
        iterations: run.epochs,
        stopped: run.stopped,
        seconds: run.seconds,
        backend: run.backend,
        peak_device_bytes: run.peak_device_bytes,
    })
}

/// Fits `image` by IMP (the paper's baseline): rounds of `plan.cfg.iters` epochs, pruning 10%
/// a round, until at most `s` weights remain. `on_round` sees every round; `Break` stops.
pub fn fit_imp(
    image: &Image,
    plan: &FitPlan,
    problem: &Problem,
    device: &crate::imp::ImpDevice,
    on_epoch: impl FnMut(&crate::imp::ImpEpoch) -> ControlFlow<()>,
    on_round: impl FnMut(&crate::imp::RoundReport) -> ControlFlow<()>,
) -> Result<ImageFit> {
    fit_imp_from(
        image,
        plan,
        problem,
        device,
        None,
        on_epoch,
        on_round,
        |_| Ok(()),
    )
}

/// [`fit_imp`] from a round boundary of an earlier run (`resume`), with `on_boundary` seeing
/// every boundary (checkpoints). `seconds` counts only this run.
#[allow(clippy::too_many_arguments)]
pub fn fit_imp_from(
    image: &Image,
    plan: &FitPlan,
    problem: &Problem,
    device: &crate::imp::ImpDevice,
    resume: Option<crate::imp::ImpResume>,
    on_epoch: impl FnMut(&crate::imp::ImpEpoch) -> ControlFlow<()>,
    on_round: impl FnMut(&crate::imp::RoundReport) -> ControlFlow<()>,
    on_boundary: impl FnMut(&crate::imp::ImpResume) -> Result<()>,
) -> Result<ImageFit> {
    let r = crate::imp::fit_from(
        problem,
        &imp_options(plan),
        device,
        resume,
        on_epoch,
        on_round,
        on_boundary,
    )?;
    let run = ImpRunSoFar {
        seconds: r.seconds,
        epochs: r.epochs,
        stopped: r.stopped,
        peak_device_bytes: r.peak_device_bytes,
        backend: r.backend,
    };
    imp_image_fit(image, plan, problem, &r.model, device, run)
}

impl ImageModel {
    /// The model file of an IMP network fitted on an image (`spec` its features, one output):
    /// `U` as IHT's weights, `V` as the output layer, ReLU gating (gates `sequential`, the
    /// format's rule for self-gated models).
    pub fn from_imp(
        net: &crate::imp::ImpModel,
        spec: &InrSpec,
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<ImageModel> {
        net.check()?;
        if net.c != 1 || net.m != spec.neurons || net.d != spec.features {
            return Err(Error::invalid(
                Param::Model,
                format!(
                    "an image model needs one output and the spec's m = {}, d = {} (network: \
                     m = {}, d = {}, C = {})",
                    spec.neurons, spec.features, net.m, net.d, net.c
                ),
            ));
        }
        Ok(ImageModel {
            spec: InrSpec {
                gates: GateMode::Sequential,
                ..spec.clone()
            },
            height,
            width,
            channels,
            gating: Gating::SelfGated,
            w: net.u.clone(),
            output: Some(net.v.clone()),
            dct: Default::default(),
        })
    }
}
