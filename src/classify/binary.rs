//! Binary classification by IHT: spinr's fused network `Σ_j relu(w_j · x)` fitted to 0/1
//! labels by least squares on a backend, layer by layer.

use super::{ClassifyPlan, Layer, SparseNet};
use crate::backend::{self, BackendChoice, BackendInfo};
use crate::data::Split;
use crate::error::Result;
use crate::iht::{self, EpochReport, Task};
use crate::problem::{Features, GateMode, Problem};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// Where training runs.
#[derive(Clone, Debug)]
pub struct Device {
    pub backend: BackendChoice,
    pub adapter: Option<String>,
}

/// A trained network and what training took.
#[derive(Clone, Debug)]
pub struct Trained {
    pub net: SparseNet,
    pub seconds: f64,
    pub peak_device_bytes: u64,
    pub backend: BackendInfo,
    /// Epochs run (summed over layers).
    pub epochs: usize,
    pub stopped: bool,
}

/// Progress of layer-wise training: which layer, and its epoch.
pub struct LayerEpoch<'a> {
    pub layer: usize,
    pub report: &'a EpochReport,
}

/// Trains `plan.layers` fused layers by IHT on the two classes of `split`.
pub fn train(
    plan: &ClassifyPlan,
    split: &Split,
    device: &Device,
    mut observe: impl FnMut(&LayerEpoch) -> ControlFlow<()>,
) -> Result<Trained> {
    let train = &split.train;
    let y: Vec<f32> = train.labels.iter().map(|&l| l as f32).collect();
    let mut net = SparseNet {
        input_scale: plan.input_scale,
        layers: Vec::new(),
    };
    let start = Instant::now();
    let mut peak = 0;
    let mut epochs = 0;
    let mut info = None;
    let mut stopped = false;
    plan.check_capacity(train.d, 0)?;
    for l in 0..plan.layers {
        let x = net.features(&train.x, train.d, l);
        let d = if l == 0 { train.d } else { plan.neurons };
        let s = plan.layer_nonzeros(l);
        // Each layer its own gate draw, from the seed.
        let gate_seed = crate::inr::gate_seed(plan.seed.wrapping_add(l as u64));
        let problem = Arc::new(Problem::new(
            d,
            plan.neurons,
            Features::Dense(x),
            y.clone(),
            GateMode::Sequential,
            gate_seed,
        )?);
        let mut cfg = plan.iht.resolve(
            plan.variant,
            Task::Classify,
            s,
            plan.epochs,
            GateMode::Sequential,
        )?;
        cfg.batch_size = Some(plan.batch_size);
        cfg.seed = plan.seed;
        let mut be = backend::create_for(
            device.backend,
            device.adapter.as_deref(),
            problem.clone(),
            s,
            true,
        )?;
        info.get_or_insert_with(|| be.info());
        let fit = iht::fit_with(be.as_mut(), Some(&problem), problem.n, &cfg, |r| {
            observe(&LayerEpoch {
                layer: l,
                report: r,
            })
        })?;
        peak = peak.max(be.memory().peak_bytes);
        epochs += fit.iterations;
        net.layers.push(Layer {
            m: plan.neurons,
            d,
            w: fit.w,
            output: None,
        });
        if fit.stopped {
            stopped = true;
            break;
        }
    }
    Ok(Trained {
        net,
        seconds: start.elapsed().as_secs_f64(),
        peak_device_bytes: peak,
        backend: info.expect("at least one layer"),
        epochs,
        stopped,
    })
}
