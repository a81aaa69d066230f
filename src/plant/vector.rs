//! The vector-output planted experiment (the paper's Fig. 2): plant a sparse two-layer ReLU
//! network `f(x) = W2*ᵀ relu(W1* x)` with `C` outputs, sense it on Gaussian inputs, and recover
//! it with the vector-output IHT step ([`crate::iht::vector`]) on squared error.
//!
//! The plant: `k = clamp(s / 2C, 1, m)` units at random positions among the `m`, each with a
//! full output row (`C` standard-normal weights) and the remaining `s − kC` input weights spread
//! evenly over their `W1` rows at random features (standard normal) — `s` nonzeros over both
//! blocks, as the fit counts them.
//!
//! A ReLU network is identified only up to a positive scale per unit (`relu(a·z)/a`) and an
//! order of units, so recovery compares the *fused* units `P_j = w1_j w2_jᵀ` (`d × C`, invariant
//! to the scale) after matching fitted to planted units: the relative Frobenius error of the
//! `P`s and the support difference of `W1` and `W2` rows of matched units.

use super::{PlantReport, PlantSpec, TEST_SAMPLES};
use crate::backend::vector::cpu::CpuVector;
use crate::backend::vector::{Targets, VectorBackend, VectorProblem};
use crate::backend::{BackendInfo, Slot};
use crate::error::{Error, Param, Result};
use crate::iht::vector::{self, VectorTraining};
use crate::iht::Variant;
use crate::metrics;
use crate::problem::GateMode;
use crate::sparse::SparseVec;
use crate::train::{EpochReport, Schedule};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::ops::ControlFlow;
use std::sync::Arc;

/// The paper's minibatch for Fig. 2 (full batch when `n` is smaller).
pub const PAPER_BATCH: usize = 5000;
/// Relative error of the fused units below which (with equal supports) a network counts as
/// recovered: f32 round-off of a converged fit is far below it, a near miss far above.
pub const RECOVERY_TOLERANCE: f64 = 1e-3;

/// A planted vector-output instance.
pub struct PlantedVector {
    pub train: Arc<VectorProblem>,
    pub test: Arc<VectorProblem>,
    pub w_star: SparseVec,
}

/// Draws the planted network and its training and test samples.
pub fn build(spec: &PlantSpec, c: usize) -> Result<PlantedVector> {
    let (d, m, s) = (spec.inputs, spec.neurons, spec.nonzeros);
    crate::problem::check_sizes(spec.samples.max(1), d, m)?;
    if spec.samples == 0 {
        return Err(Error::invalid(Param::Samples, "need at least one sample"));
    }
    let len = m * (d + c);
    let k = (s / (2 * c)).clamp(1, m);
    if s < k * (c + 1) || s - k * c > k * d {
        return Err(Error::invalid(
            Param::Nonzeros,
            format!(
                "the planted network has k = clamp(s/2C, 1, m) = {k} units, each with C = {c} \
                 outputs and 1..=d inputs, so s must be between {} and {} (m·(d + C) = {len})",
                k * (c + 1),
                k * (c + d)
            ),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ 0x7ec7_0a11);
    let mut units: Vec<usize> = sample(&mut rng, m, k).into_vec();
    units.sort_unstable();
    let w2 = m * d;
    let inputs = s - k * c;
    let mut pairs = Vec::with_capacity(s);
    for (u, &j) in units.iter().enumerate() {
        let take = inputs / k + (u < inputs % k) as usize;
        for q in sample(&mut rng, d, take) {
            pairs.push(((j * d + q) as u32, StandardNormal.sample(&mut rng)));
        }
        for o in 0..c {
            pairs.push(((w2 + j * c + o) as u32, StandardNormal.sample(&mut rng)));
        }
    }
    let w_star = SparseVec::from_pairs(pairs);
    let gauss = |rng: &mut rand::rngs::StdRng, len: usize| -> Vec<f32> {
        (0..len).map(|_| StandardNormal.sample(rng)).collect()
    };
    let x_train = gauss(&mut rng, spec.samples * d);
    let x_test = gauss(&mut rng, TEST_SAMPLES * d);
    let make = |x: Vec<f32>, n: usize| -> Result<Arc<VectorProblem>> {
        let zeros = Targets::Values(vec![0.0; n * c]);
        let p = VectorProblem::new(d, m, c, x, zeros, spec.seed)?;
        let y = predict(&p, &w_star)?;
        Ok(Arc::new(VectorProblem {
            targets: Targets::Values(y),
            ..p
        }))
    };
    Ok(PlantedVector {
        train: make(x_train, spec.samples)?,
        test: make(x_test, TEST_SAMPLES)?,
        w_star,
    })
}

/// The network's outputs on every sample of `p` (`n × C`, on the CPU).
pub fn predict(p: &VectorProblem, w: &SparseVec) -> Result<Vec<f32>> {
    let mut b = CpuVector::new(Arc::new(p.clone()), w.len().clamp(1, p.signal_len()))?;
    b.load(Slot::W, w)?;
    b.predict(Slot::W)
}

fn values(p: &VectorProblem) -> &[f32] {
    match &p.targets {
        Targets::Values(y) => y,
        Targets::Classes(_) => unreachable!("planted targets are values"),
    }
}

/// How the fit is trained: the paper's Fig. 2 settings (`--variant paper`: count-sketch, fixed
/// step, minibatches of 5000) or spinr's IHT with Armijo refinement, full batch by default.
pub fn training(
    spec: &PlantSpec,
    variant: Variant,
    epochs: usize,
    batch_size: Option<usize>,
    inner: Option<usize>,
) -> VectorTraining {
    VectorTraining {
        s: spec.nonzeros,
        variant,
        inner: inner.unwrap_or(crate::iht::DEFAULT_IMAGE_INNER),
        mu: match variant {
            Variant::Paper => vector::PAPER_LR,
            Variant::Spinr => vector::SPINR_MU0,
        },
        schedule: Schedule {
            n: spec.samples,
            epochs,
            batch_size: match variant {
                Variant::Paper => batch_size.or(Some(PAPER_BATCH)),
                Variant::Spinr => batch_size,
            },
            grow_to: None,
            seed: spec.seed,
        },
    }
}

/// Trains on the planted instance and scores the best model. Stops early once the training
/// loss is exact to f32 precision or has not improved by 0.1% in 20 epochs.
pub fn run(
    be: &mut dyn VectorBackend,
    spec: &PlantSpec,
    planted: &PlantedVector,
    t: &VectorTraining,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<(SparseVec, usize)> {
    let (w, epochs, _) = run_from(
        be,
        spec,
        planted,
        t,
        None,
        on_epoch,
        &mut crate::iht::NoCheckpoints,
    )?;
    Ok((w, epochs))
}

/// [`run`] from a checkpoint (`resume`), saving through `checkpoints`; also says whether a
/// checkpointer stopped it (an interrupt; not the early stop of an exact or stalled fit).
pub fn run_from(
    be: &mut dyn VectorBackend,
    spec: &PlantSpec,
    planted: &PlantedVector,
    t: &VectorTraining,
    resume: Option<&crate::iht::Resume>,
    mut on_epoch: impl FnMut(&EpochReport),
    checkpoints: &mut dyn crate::iht::Checkpointer,
) -> Result<(SparseVec, usize, bool)> {
    let y = values(&planted.train);
    let scale = y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / spec.samples as f64;
    // The stall test looks 20 epochs back: a resumed run sees the epochs before it too.
    let mut recent: Vec<f64> = resume.map_or_else(Vec::new, |r| r.at.history.clone());
    let mut early = false;
    let (w, out) = vector::train_from(
        be,
        &planted.train,
        t,
        resume,
        |r| {
            on_epoch(r);
            recent.push(r.loss);
            let exact = r.loss <= 1e-14 * scale;
            let stalled = recent.len() > 20 && r.loss >= 0.999 * recent[recent.len() - 21];
            if exact || stalled {
                early = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        checkpoints,
    )?;
    Ok((w, out.epochs, out.stopped && !early))
}

/// One unit's rows: `W1` entries (feature, value) and its dense output row.
struct Unit {
    w1: Vec<(u32, f32)>,
    w2: Vec<f32>,
}

impl Unit {
    fn norm2(&self) -> f64 {
        let a: f64 = self.w1.iter().map(|&(_, v)| (v as f64).powi(2)).sum();
        let b: f64 = self.w2.iter().map(|&v| (v as f64).powi(2)).sum();
        a * b
    }

    /// `⟨P_a, P_b⟩ = (w1_a · w1_b)(w2_a · w2_b)`.
    fn dot(&self, o: &Unit) -> f64 {
        let mut a = 0f64;
        let (mut p, mut q) = (0, 0);
        while p < self.w1.len() && q < o.w1.len() {
            match self.w1[p].0.cmp(&o.w1[q].0) {
                std::cmp::Ordering::Less => p += 1,
                std::cmp::Ordering::Greater => q += 1,
                std::cmp::Ordering::Equal => {
                    a += self.w1[p].1 as f64 * o.w1[q].1 as f64;
                    p += 1;
                    q += 1;
                }
            }
        }
        let b: f64 = self
            .w2
            .iter()
            .zip(&o.w2)
            .map(|(&x, &y)| x as f64 * y as f64)
            .sum();
        a * b
    }

    fn support_difference(&self, o: &Unit) -> usize {
        let s1 = |u: &Unit| -> std::collections::BTreeSet<u32> {
            u.w1.iter().filter(|p| p.1 != 0.0).map(|p| p.0).collect()
        };
        let s2 = |u: &Unit| -> Vec<bool> { u.w2.iter().map(|&v| v != 0.0).collect() };
        s1(self).symmetric_difference(&s1(o)).count()
            + s2(self).iter().zip(s2(o)).filter(|(a, b)| *a != b).count()
    }
}

/// The units with any nonzero weight.
fn units(w: &SparseVec, d: usize, m: usize, c: usize) -> Vec<Unit> {
    let w2 = m * d;
    let mut out: Vec<Option<Unit>> = (0..m).map(|_| None).collect();
    for (&i, &v) in w.indices.iter().zip(&w.values) {
        if v == 0.0 {
            continue;
        }
        let i = i as usize;
        let (j, slot) = if i < w2 {
            (i / d, None)
        } else {
            ((i - w2) / c, Some((i - w2) % c))
        };
        let u = out[j].get_or_insert_with(|| Unit {
            w1: Vec::new(),
            w2: vec![0.0; c],
        });
        match slot {
            None => u.w1.push(((i % d) as u32, v)),
            Some(o) => u.w2[o] = v,
        }
    }
    out.into_iter().flatten().collect()
}

/// Relative error of the fused units and the support difference, after matching each planted
/// unit to the fitted unit closest to it (greedily by normalised `⟨P̂, P*⟩`); unmatched units
/// on either side count in full.
pub fn compare(w: &SparseVec, w_star: &SparseVec, d: usize, m: usize, c: usize) -> (f64, usize) {
    let (fit, star) = (units(w, d, m, c), units(w_star, d, m, c));
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (a, u) in fit.iter().enumerate() {
        for (b, v) in star.iter().enumerate() {
            let cos = u.dot(v) / (u.norm2() * v.norm2()).sqrt().max(f64::MIN_POSITIVE);
            pairs.push((cos, a, b));
        }
    }
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
    let (mut used_fit, mut used_star) = (vec![false; fit.len()], vec![false; star.len()]);
    let (mut err2, mut support) = (0f64, 0usize);
    for (cos, a, b) in pairs {
        if cos <= 0.0 || used_fit[a] || used_star[b] {
            continue;
        }
        used_fit[a] = true;
        used_star[b] = true;
        let (u, v) = (&fit[a], &star[b]);
        err2 += u.norm2() + v.norm2() - 2.0 * u.dot(v);
        support += u.support_difference(v);
    }
    let empty = Unit {
        w1: Vec::new(),
        w2: vec![0.0; c],
    };
    for (u, used) in fit.iter().zip(&used_fit).chain(star.iter().zip(&used_star)) {
        if !used {
            err2 += u.norm2();
            support += u.support_difference(&empty);
        }
    }
    let total: f64 = star.iter().map(Unit::norm2).sum();
    (
        (err2.max(0.0) / total.max(f64::MIN_POSITIVE)).sqrt(),
        support,
    )
}

/// Scores a fitted network against the plant.
pub fn score(
    spec: &PlantSpec,
    c: usize,
    planted: &PlantedVector,
    w: &SparseVec,
    iterations: usize,
    info: &BackendInfo,
    seconds: f64,
) -> Result<PlantReport> {
    let (relative_error, support_errors) =
        compare(w, &planted.w_star, spec.inputs, spec.neurons, c);
    let psnr = |p: &VectorProblem| -> Result<f64> {
        let y = values(p);
        let pred = predict(p, w)?;
        Ok(metrics::psnr_from_mse(
            metrics::mse(&pred, y),
            metrics::range(y),
        ))
    };
    Ok(PlantReport {
        method: crate::inr::fit::Method::Iht,
        variant: Variant::Spinr,
        gates: GateMode::Sequential,
        backend: info.kind.to_string(),
        adapter: info.adapter.clone(),
        inputs: spec.inputs,
        neurons: spec.neurons,
        nonzeros: spec.nonzeros,
        samples: spec.samples,
        outputs: c,
        seed: spec.seed,
        recovered: relative_error < RECOVERY_TOLERANCE && support_errors == 0,
        relative_error,
        support_errors,
        train_psnr: psnr(&planted.train)?,
        test_psnr: psnr(&planted.test)?,
        iterations,
        seconds,
        peak_device_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ignores_unit_order_and_scale() {
        let (d, m, c) = (6, 4, 2);
        let w2 = m * d;
        // Planted: units 0 and 2.
        let star = SparseVec::from_pairs(vec![
            (1, 1.0),
            (4, -2.0),
            (12, 0.5),
            (w2 as u32, 1.0),
            (w2 as u32 + 1, -1.0),
            ((w2 + 4) as u32, 2.0),
            ((w2 + 5) as u32, 3.0),
        ]);
        // Fitted: the same units as units 3 and 1, rescaled by 2 and 0.5.
        let fit = SparseVec::from_pairs(vec![
            ((3 * d + 1) as u32, 2.0),
            ((3 * d + 4) as u32, -4.0),
            (d as u32, 0.25),
            ((w2 + 6) as u32, 0.5),
            ((w2 + 7) as u32, -0.5),
            ((w2 + 2) as u32, 4.0),
            ((w2 + 3) as u32, 6.0),
        ]);
        let (err, sup) = compare(&fit, &star, d, m, c);
        assert!(err < 1e-6, "{err}");
        assert_eq!(sup, 0);
        // One input of fitted unit 3 moved from feature 4 to 5 (the unit still matches on
        // feature 1): a support difference of 2 and a real error.
        let mut moved = fit.clone();
        assert_eq!(moved.indices[2], (3 * d + 4) as u32);
        moved.indices[2] = (3 * d + 5) as u32;
        let moved = SparseVec::from_pairs(moved.indices.into_iter().zip(moved.values).collect());
        let (err, sup) = compare(&moved, &star, d, m, c);
        assert!(err > 0.1, "{err}");
        assert_eq!(sup, 2);
    }

    #[test]
    fn the_plant_has_s_nonzeros_and_rejects_impossible_s() {
        let spec = PlantSpec {
            gates: GateMode::Sequential,
            inputs: 20,
            neurons: 8,
            nonzeros: 37,
            samples: 30,
            seed: 1,
        };
        let p = build(&spec, 3).unwrap();
        assert_eq!(p.w_star.len(), 37);
        assert_eq!(values(&p.train).len(), 30 * 3);
        for s in [3, 10_000] {
            let bad = PlantSpec {
                nonzeros: s,
                ..spec.clone()
            };
            let e = build(&bad, 3).err().expect("impossible s");
            assert!(e.to_string().contains("s must be between"), "{e}");
        }
    }
}
