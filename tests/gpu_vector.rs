//! The vector-output kernels (`shaders/vector.wgsl`) against the CPU backend: awkward sizes
//! (not multiples of the workgroup size, several dense-pass tiles), C = 1 (squared error) and
//! C = 10 (cross-entropy), empty support, the full support s = m·(d + C), minibatches, with
//! every kernel's outputs poisoned with NaN before it runs.

mod common;

use spinr::backend::vector::cpu::CpuVector;
use spinr::backend::vector::gpu::GpuVector;
use spinr::backend::vector::{Selection, Targets, VectorBackend, VectorProblem};
use spinr::backend::Slot;
use spinr::sparse::SparseVec;
use std::sync::Arc;

/// Deterministic pseudo-random values in [-1, 1).
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn problem(n: usize, d: usize, m: usize, c: usize, classes: bool) -> Arc<VectorProblem> {
    let x = noise(n * d, 1);
    let targets = if classes {
        Targets::Classes((0..n).map(|i| ((i * 7 + i / 3) % c) as u8).collect())
    } else {
        Targets::Values(noise(n * c, 2))
    };
    Arc::new(VectorProblem::new(d, m, c, x, targets, 5).unwrap())
}

/// A support of `s` entries spread over both blocks, values of order 1.
fn weights(p: &VectorProblem, s: usize, seed: u64) -> SparseVec {
    let len = p.signal_len();
    let vals = noise(len, seed);
    let mut idx: Vec<u32> = (0..len as u32).collect();
    // A fixed shuffle: keep every k-th entry starting from an offset.
    idx.sort_by_key(|&i| (i as u64).wrapping_mul(2_654_435_761) % 1_000_003);
    let mut pairs: Vec<(u32, f32)> = idx[..s]
        .iter()
        .map(|&i| (i, 2.0 * vals[i as usize]))
        .collect();
    pairs.sort_by_key(|p| p.0);
    SparseVec::from_pairs(pairs)
}

fn close(a: f64, b: f64, scale: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol * (scale + b.abs()),
        "{what}: gpu {a} vs cpu {b}"
    );
}

fn vec_close(a: &[f32], b: &[f32], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().map(|&v| v.abs() as f64).fold(0.0, f64::max) + 1e-12;
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.is_finite(),
            "{what}[{k}] is {x} (an output left unwritten)"
        );
        assert!(
            ((x - y) as f64).abs() <= tol * scale,
            "{what}[{k}]: gpu {x} vs cpu {y}"
        );
    }
}

fn pair(p: &Arc<VectorProblem>, s: usize, tile: usize) -> (GpuVector, CpuVector) {
    let mut g = GpuVector::new(common::gpu_ctx(), p.clone(), s).unwrap();
    g.set_poison(true);
    g.set_tile(tile);
    (g, CpuVector::new(p.clone(), s).unwrap())
}

/// forward, gradient, trial, accept, predict and the exact dense pass agree.
fn check(p: Arc<VectorProblem>, s: usize, tile: usize, batch: Option<Vec<u32>>) {
    let what = format!("n={} d={} m={} C={} s={s} tile={tile}", p.n, p.d, p.m, p.c);
    let (mut g, mut c) = pair(&p, p.signal_len(), tile);
    let w = weights(&p, s, 3);
    for b in [&mut g as &mut dyn VectorBackend, &mut c] {
        b.load(Slot::W, &w).unwrap();
        b.set_batch(batch.as_deref()).unwrap();
    }
    let (lg, lc) = (g.forward(Slot::W).unwrap(), c.forward(Slot::W).unwrap());
    close(lg, lc, 1e-3, 1e-4, &format!("{what}: loss"));
    let (ng, nc) = (
        g.gradient(Slot::W, Slot::G).unwrap(),
        c.gradient(Slot::W, Slot::G).unwrap(),
    );
    close(ng, nc, 1e-6, 1e-3, &format!("{what}: ‖g‖²"));
    let (gg, gc) = (g.read(Slot::G).unwrap(), c.read(Slot::G).unwrap());
    assert_eq!(gg.indices, gc.indices);
    vec_close(&gg.values, &gc.values, 1e-4, &format!("{what}: gradient"));
    let mu = 0.3;
    let (tg, tc) = (
        g.trial(Slot::W, Slot::G, Slot::TRIAL, mu).unwrap(),
        c.trial(Slot::W, Slot::G, Slot::TRIAL, mu).unwrap(),
    );
    close(tg, tc, 1e-3, 1e-4, &format!("{what}: trial loss"));
    g.accept_trial().unwrap();
    c.accept_trial().unwrap();
    // The dense pass with the accepted trial's residual, every entry kept (s = len).
    let len = p.signal_len();
    g.threshold(Slot::TRIAL, mu, len, Slot::V, Selection::Exact)
        .unwrap();
    c.threshold(Slot::TRIAL, mu, len, Slot::V, Selection::Exact)
        .unwrap();
    let (vg, vc) = (g.read(Slot::V).unwrap(), c.read(Slot::V).unwrap());
    assert_eq!(vg.indices, vc.indices, "{what}: dense pass support");
    vec_close(&vg.values, &vc.values, 1e-4, &format!("{what}: w − μ∇"));
    // Predictions on every sample, whatever the batch.
    vec_close(
        &g.predict(Slot::TRIAL).unwrap(),
        &c.predict(Slot::TRIAL).unwrap(),
        1e-4,
        &format!("{what}: scores"),
    );
}

#[test]
fn vector_kernels_match_the_cpu_on_awkward_sizes() {
    for (n, d, m, c, classes, s, tile) in [
        (37, 5, 4, 3, true, 9, 4),
        (130, 13, 7, 10, true, 40, 3),
        (65, 9, 5, 1, false, 12, 2),
        (71, 6, 3, 2, false, 24, 1), // s = m·(d + C): every entry
        (50, 4, 3, 10, true, 0, 3),  // empty support
    ] {
        let p = problem(n, d, m, c, classes);
        check(p.clone(), s, tile, None);
        let batch: Vec<u32> = (0..n as u32).rev().step_by(3).collect();
        check(p, s, tile, Some(batch));
    }
}

#[test]
fn a_whole_vector_fit_agrees_between_backends() {
    use spinr::iht::vector::{train, VectorTraining, SPINR_MU0};
    use spinr::iht::Variant;
    use spinr::train::Schedule;
    let p = problem(90, 8, 6, 4, true);
    let t = VectorTraining {
        s: 30,
        variant: Variant::Spinr,
        inner: 3,
        mu: SPINR_MU0,
        schedule: Schedule {
            n: p.n,
            epochs: 4,
            batch_size: Some(40),
            grow_to: None,
            seed: 1,
        },
    };
    let (mut g, mut c) = pair(&p, t.s, 2);
    g.set_poison(false);
    let (wg, og) = train(&mut g, &p, &t, |_| std::ops::ControlFlow::Continue(())).unwrap();
    let (wc, oc) = train(&mut c, &p, &t, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert_eq!(wg.indices, wc.indices, "supports");
    vec_close(&wg.values, &wc.values, 1e-3, "weights");
    close(
        og.best_loss.unwrap(),
        oc.best_loss.unwrap(),
        1e-3,
        1e-3,
        "best loss",
    );
}
