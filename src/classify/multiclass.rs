//! Multiclass classification: the two-block network `W2ᵀ relu(W1 x)` with softmax
//! cross-entropy, trained layer by layer with the thresholded step of [`crate::iht::vector`]
//! on a [`crate::backend::vector::VectorBackend`].

use super::binary::{Device, LayerEpoch, Trained};
use super::{ClassifyPlan, Layer, SparseNet};
use crate::backend::vector::{Targets, VectorProblem};
use crate::data::Split;
use crate::error::Result;
use crate::iht::vector::{self, VectorTraining, PAPER_LR, SPINR_MU0};
use crate::iht::Variant;
use crate::sparse::SparseVec;
use crate::train::Schedule;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// Trains `plan.layers` layers; hidden layers keep `W1` (their temporary `W2` is dropped).
pub fn train(
    plan: &ClassifyPlan,
    split: &Split,
    device: &Device,
    mut observe: impl FnMut(&LayerEpoch) -> ControlFlow<()>,
) -> Result<Trained> {
    let ds = &split.train;
    let classes = ds.classes.max(2);
    let mut net = SparseNet {
        input_scale: plan.input_scale,
        layers: Vec::new(),
    };
    let start = Instant::now();
    let (mut peak, mut epochs, mut info, mut stopped) = (0, 0, None, false);
    plan.check_capacity(ds.d, classes)?;
    for l in 0..plan.layers {
        let x = net.features(&ds.x, ds.d, l);
        let d = if l == 0 { ds.d } else { plan.neurons };
        let p = Arc::new(VectorProblem::new(
            d,
            plan.neurons,
            classes,
            x,
            Targets::Classes(ds.labels.clone()),
            plan.seed.wrapping_add(l as u64),
        )?);
        let s = plan.layer_nonzeros(l);
        let mut be = crate::backend::vector::create(
            device.backend,
            device.adapter.as_deref(),
            p.clone(),
            s,
            plan.variant == Variant::Spinr,
        )?;
        info.get_or_insert_with(|| be.info());
        let training = VectorTraining {
            s,
            variant: plan.variant,
            inner: plan.iht.inner.unwrap_or(3),
            mu: match plan.variant {
                Variant::Paper => PAPER_LR,
                Variant::Spinr => SPINR_MU0,
            },
            schedule: Schedule {
                n: p.n,
                epochs: plan.epochs,
                batch_size: Some(plan.batch_size),
                grow_to: None,
                seed: plan.seed,
            },
        };
        let (w, out) = vector::train(be.as_mut(), &p, &training, |r| {
            observe(&LayerEpoch {
                layer: l,
                report: r,
            })
        })?;
        epochs += out.epochs;
        peak = peak.max(be.memory().peak_bytes);
        let w2 = p.w2_offset();
        let split_at = w.indices.partition_point(|&i| (i as usize) < w2);
        let w1 = SparseVec {
            indices: w.indices[..split_at].to_vec(),
            values: w.values[..split_at].to_vec(),
        };
        let last = l + 1 == plan.layers || out.stopped;
        let output = last.then(|| {
            let mut o = vec![0f32; p.m * p.c];
            for q in split_at..w.len() {
                o[w.indices[q] as usize - w2] = w.values[q];
            }
            o
        });
        net.layers.push(Layer {
            m: plan.neurons,
            d,
            w: w1,
            output,
        });
        if out.stopped {
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
