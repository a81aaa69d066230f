//! Multiclass classification: the two-block network `W2ᵀ relu(W1 x)` with softmax
//! cross-entropy, trained by thresholded gradient steps on a [`VectorBackend`].
//!
//! Both variants start from virtual initial values (PyTorch-style uniform in both blocks,
//! regenerated from the seed, never stored), so the first gradient is not zero: the paper's
//! code from their top-`s`, spinr from units that have both an input and an output
//! ([`initial`]).
//! - `paper` (its code): a fixed step `lr`; every step adds `−lr ∇` of all entries to a
//!   count-sketch, and the support is the top-`s` of initial values plus sketched updates.
//! - `spinr`: IHT proper: `top_s(w − μ ∇)`, then `K` refinement steps on the support with
//!   Armijo backtracking on the minibatch loss; `μ` adapts (doubled after an accepted step,
//!   halved after a rejected one) and carries over. Units without `W1` entries get random
//!   gates in the dense pass so they can be recruited.

use super::binary::{Device, LayerEpoch, Trained};
use super::{ClassifyPlan, Layer, SparseNet};
use crate::backend::vector::cpu::CpuVector;
use crate::backend::vector::{Selection, VectorBackend, VectorProblem};
use crate::backend::{BackendChoice, Slot};
use crate::data::Split;
use crate::error::{Error, Param, Result};
use crate::iht::Variant;
use crate::sparse::{SparseVec, TopS};
use crate::train::{self, Learner, Schedule};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// The paper's fixed step on raw 0–255 pixels.
pub const PAPER_LR: f32 = 1e-3;
/// spinr's first step size (on inputs scaled to [0, 1]); it adapts from there.
pub const SPINR_MU0: f32 = 1.0;

/// One layer's training as a [`Learner`].
struct VectorLearner<'a> {
    be: &'a mut dyn VectorBackend,
    s: usize,
    variant: Variant,
    inner: usize,
    mu: f32,
    batched: bool,
}

impl Learner for VectorLearner<'_> {
    fn update(&mut self, batch: Option<&[u32]>) -> Result<()> {
        let be = &mut *self.be;
        be.set_batch(batch)?;
        self.batched = batch.is_some();
        let mut f_v;
        be.forward(Slot::W)?;
        match self.variant {
            Variant::Paper => be.threshold(Slot::W, self.mu, self.s, Slot::W, Selection::Sketch),
            Variant::Spinr => {
                be.threshold(Slot::W, self.mu, self.s, Slot::V, Selection::Exact)?;
                // The thresholded vector's loss, and its residual for the first gradient.
                f_v = be.forward(Slot::V)?;
                let (mut v, mut t) = (Slot::V, Slot::TRIAL);
                for _ in 0..self.inner {
                    let gn = be.gradient(v, Slot::G)?;
                    if gn == 0.0 {
                        break;
                    }
                    let mut accepted = false;
                    for _ in 0..12 {
                        let f_t = be.trial(v, Slot::G, t, self.mu)?;
                        if f_t <= f_v - 0.5 * self.mu as f64 * gn {
                            be.accept_trial()?;
                            std::mem::swap(&mut v, &mut t);
                            f_v = f_t;
                            self.mu *= 2.0;
                            accepted = true;
                            break;
                        }
                        self.mu *= 0.5;
                    }
                    if !accepted {
                        break;
                    }
                }
                be.copy(Slot::W, v)
            }
        }
    }

    fn evaluate(&mut self) -> Result<f64> {
        if self.batched {
            self.be.set_batch(None)?;
            self.batched = false;
        }
        self.be.forward(Slot::W)
    }

    fn keep_best(&mut self) -> Result<()> {
        self.be.copy(Slot::BEST, Slot::W)
    }
}

/// The starting support: `k = s / 2C` units (at most m) with their whole output row (C
/// entries) and the largest initial first-layer weights of their rows for the rest, so every
/// starting unit has both an input and an output. A plain top-`s` over both blocks (the
/// paper's) takes only output weights whenever `s` is below about `0.64·m·C` (their uniform
/// range is wider): no hidden activity, nothing to learn from — 10% test accuracy at
/// s ≤ 500, m = 100 — and output and input weights scattered over different units do little
/// better (22% at s = 100).
fn initial(p: &VectorProblem, s: usize) -> SparseVec {
    let (m, d, c) = (p.m, p.d, p.c);
    let k = (s / (2 * c)).clamp(1, m);
    let out_entries = (k * c).min(s.saturating_sub(k));
    let per_unit = (s - out_entries) / k;
    let mut extra = (s - out_entries) % k;
    let mut pairs = Vec::with_capacity(s);
    for j in 0..k {
        let take = (per_unit + (extra > 0) as usize).min(d);
        extra = extra.saturating_sub(1);
        let mut top = TopS::new(take);
        for q in 0..d {
            let i = (j * d + q) as u32;
            top.push(i, p.initial_value(i));
        }
        let t = top.finish();
        pairs.extend(t.indices.into_iter().zip(t.values));
    }
    let w2 = p.w2_offset();
    for q in 0..out_entries {
        let i = (w2 + q) as u32;
        pairs.push((i, p.initial_value(i)));
    }
    SparseVec::from_pairs(pairs)
}

/// Trains `plan.layers` layers; hidden layers keep `W1` (their temporary `W2` is dropped).
pub fn train(
    plan: &ClassifyPlan,
    split: &Split,
    device: &Device,
    mut observe: impl FnMut(&LayerEpoch) -> ControlFlow<()>,
) -> Result<Trained> {
    if device.backend == BackendChoice::Gpu {
        return Err(Error::invalid(
            Param::Method,
            "multiclass training runs on the CPU backend in this version (use --backend cpu)",
        ));
    }
    let ds = &split.train;
    let classes = ds.classes.max(2);
    let mut net = SparseNet {
        input_scale: plan.input_scale,
        layers: Vec::new(),
    };
    let start = Instant::now();
    let (mut peak, mut epochs, mut info, mut stopped) = (0, 0, None, false);
    for l in 0..plan.layers {
        let x = net.features(&ds.x, ds.d, l);
        let d = if l == 0 { ds.d } else { plan.neurons };
        let p = Arc::new(VectorProblem::new(
            d,
            plan.neurons,
            classes,
            x,
            ds.labels.clone(),
            plan.seed.wrapping_add(l as u64),
        )?);
        let s = plan.layer_nonzeros(l).min(p.signal_len());
        let mut be = CpuVector::new(p.clone(), s)?;
        be.recruit = plan.variant == Variant::Spinr;
        let first = match plan.variant {
            Variant::Spinr => initial(&p, s),
            Variant::Paper => {
                let mut top = TopS::new(s);
                for i in 0..p.signal_len() as u32 {
                    top.push(i, p.initial_value(i));
                }
                top.finish()
            }
        };
        be.load(Slot::W, &first)?;
        info.get_or_insert_with(|| be.info());
        let mut learner = VectorLearner {
            be: &mut be,
            s,
            variant: plan.variant,
            inner: plan.iht.inner.unwrap_or(3),
            mu: match plan.variant {
                Variant::Paper => PAPER_LR,
                Variant::Spinr => SPINR_MU0,
            },
            batched: false,
        };
        let schedule = Schedule {
            n: p.n,
            epochs: plan.epochs,
            batch_size: Some(plan.batch_size),
            seed: plan.seed,
        };
        let out = train::run(&mut learner, &schedule, |r| {
            observe(&LayerEpoch {
                layer: l,
                report: r,
            })
        })?;
        epochs += out.epochs;
        let w = be.read(Slot::BEST)?;
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
