//! The CPU backend against a naive dense f64 computation of `A` on small random problems.

use rand::{Rng, SeedableRng};
use spinr::backend::{cpu::CpuBackend, Backend, GateSource, Slot};
use spinr::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use spinr::rng::gate_vector;
use spinr::sparse::{rank, SparseVec};
use std::sync::Arc;

/// Dense `A` (n × m·d) in f64 for the given gate vectors (`None` = all open).
fn dense_a(p: &Problem, gates: &Option<Vec<Vec<f32>>>) -> Vec<f64> {
    let (n, d, m) = (p.n, p.d, p.m);
    let mut a = vec![0f64; n * m * d];
    let mut x = vec![0f32; d];
    for i in 0..n {
        p.fill_row(i, &mut x);
        for j in 0..m {
            let open = match gates {
                None => true,
                Some(h) => {
                    x.iter()
                        .zip(&h[j])
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        > 0.0
                }
            };
            if open {
                for k in 0..d {
                    a[i * m * d + j * d + k] = x[k] as f64;
                }
            }
        }
    }
    a
}

fn matvec(a: &[f64], n: usize, cols: usize, v: &[f64]) -> Vec<f64> {
    (0..n)
        .map(|i| (0..cols).map(|c| a[i * cols + c] * v[c]).sum())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn random_sparse(rng: &mut impl Rng, len: usize, s: usize) -> SparseVec {
    let idx = rand::seq::index::sample(rng, len, s);
    SparseVec::from_pairs(
        idx.into_iter()
            .map(|i| (i as u32, rng.random_range(-1.0f32..1.0)))
            .collect(),
    )
}

fn problems(rng: &mut impl Rng) -> Vec<Problem> {
    let mut out = Vec::new();
    for &(gates, n, d, m) in &[
        (GateMode::Convex, 37usize, 13usize, 5usize),
        (GateMode::Sequential, 131, 7, 9),
        (GateMode::Gaussian, 53, 29, 1),
    ] {
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        out.push(Problem::new(d, m, Features::Dense(x), y, gates, 99).unwrap());
    }
    // Fourier features of a 9×11×3 grid.
    let spec = FourierSpec {
        d: 10,
        seed: 4,
        sigma: vec![2.0, 3.0, 0.05],
        coords: vec![AxisCoords::Unit, AxisCoords::Integer, AxisCoords::Integer],
        constant_feature: true,
    };
    let g = spec.grid(&[9, 11, 3]).unwrap();
    let y: Vec<f32> = (0..g.n()).map(|_| rng.random_range(0.0f32..1.0)).collect();
    out.push(Problem::new(10, 6, Features::Grid(g), y, GateMode::Sequential, 5).unwrap());
    out
}

/// Feature budgets: 0 takes the row path (features read or generated row by row, gates per
/// pass); 1 GiB the column path (feature-major copies, cached gate masks).
const BUDGETS: [u64; 2] = [0, 1 << 30];

#[test]
fn support_and_dense_passes_match_naive_f64() {
    for budget in BUDGETS {
        passes_match_naive(budget);
    }
}

fn passes_match_naive(budget: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for p in problems(&mut rng) {
        let len = p.m * p.d;
        for &s in &[1usize, 3, len / 2, len] {
            for weight_gates in [false, true] {
                let p = Arc::new(p.clone());
                let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
                let w = random_sparse(&mut rng, len, s);
                let h = random_sparse(&mut rng, len, s.max(len / 3));
                let gates: Option<Vec<Vec<f32>>> = match (p.gates, weight_gates) {
                    (GateMode::Gaussian, _) => None,
                    (_, false) => Some(
                        (0..p.m)
                            .map(|j| {
                                let mut g = vec![0f32; p.d];
                                gate_vector(p.gate_seed, j as u32, &mut g);
                                g
                            })
                            .collect(),
                    ),
                    (_, true) => {
                        let dense = h.to_dense(len);
                        Some(
                            (0..p.m)
                                .map(|j| dense[j * p.d..(j + 1) * p.d].to_vec())
                                .collect(),
                        )
                    }
                };
                if weight_gates {
                    b.load(Slot::BEST, &h).unwrap();
                    b.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
                }
                let a = dense_a(&p, &gates);
                let wd: Vec<f64> = w.to_dense(len).iter().map(|&v| v as f64).collect();
                let r: Vec<f64> = matvec(&a, p.n, len, &wd)
                    .iter()
                    .zip(&p.y)
                    .map(|(&ax, &y)| ax - y as f64)
                    .collect();
                let loss: f64 = r.iter().map(|v| v * v).sum();

                b.load(Slot::W, &w).unwrap();
                let got = b.forward(Slot::W).unwrap();
                assert!(rel(got, loss) < 1e-5, "forward {got} vs {loss}");

                // Gradient on the support and the normalised step size.
                let full_g: Vec<f64> = (0..len)
                    .map(|c| (0..p.n).map(|i| a[i * len + c] * r[i]).sum())
                    .collect();
                let mut g_s = vec![0f64; len];
                for &i in &w.indices {
                    g_s[i as usize] = full_g[i as usize];
                }
                let gnorm: f64 = g_s.iter().map(|v| v * v).sum();
                let curv: f64 = matvec(&a, p.n, len, &g_s).iter().map(|v| v * v).sum();
                let (gn, cv) = b.step_size(Slot::W, Slot::G).unwrap();
                assert!(rel(gn, gnorm) < 1e-4, "gnorm {gn} vs {gnorm}");
                assert!(rel(cv, curv) < 1e-4 || curv < 1e-9, "curv {cv} vs {curv}");
                let gv = b.read(Slot::G).unwrap();
                assert_eq!(gv.indices, w.indices);
                for (&i, &v) in gv.indices.iter().zip(&gv.values) {
                    assert!((v as f64 - g_s[i as usize]).abs() <= 1e-4 * (1.0 + gnorm.sqrt()));
                }

                // Trial point and its residual.
                let mu = 0.01f32;
                let (_, ft) = b.trial(Slot::W, Slot::G, Slot::TRIAL, mu, false).unwrap();
                let t: Vec<f64> = (0..len).map(|c| wd[c] - mu as f64 * g_s[c]).collect();
                let ft_ref: f64 = matvec(&a, p.n, len, &t)
                    .iter()
                    .zip(&p.y)
                    .map(|(&ax, &y)| (ax - y as f64).powi(2))
                    .sum();
                assert!(rel(ft, ft_ref) < 1e-4, "trial {ft} vs {ft_ref}");

                // Dense pass: c = w − μ Aᵀ r, top-s.
                b.threshold(Slot::W, mu, s, Slot::V).unwrap();
                let got = b.read(Slot::V).unwrap();
                let c: Vec<f64> = (0..len).map(|k| wd[k] - mu as f64 * full_g[k]).collect();
                assert_eq!(got.len(), s);
                let mut order: Vec<(u32, f32)> = c
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i as u32, v as f32))
                    .collect();
                order.sort_by(rank);
                let kth = order[s - 1].1.abs() as f64;
                for (&i, &v) in got.indices.iter().zip(&got.values) {
                    let want = c[i as usize];
                    assert!(
                        (v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "value at {i}"
                    );
                    assert!(
                        want.abs() >= kth * (1.0 - 1e-5) - 1e-9,
                        "selected {i} below the s-th magnitude"
                    );
                }
            }
        }
    }
}

#[test]
fn minibatch_restricts_every_product() {
    for budget in BUDGETS {
        minibatch_restricts(budget);
    }
}

fn minibatch_restricts(budget: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let p = Arc::new(problems(&mut rng).remove(0));
    let s = 20;
    let w = random_sparse(&mut rng, p.m * p.d, s);
    let batch: Vec<u32> = vec![3, 1, 30, 7, 8, 36];
    let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
    b.load(Slot::W, &w).unwrap();
    b.set_batch(Some(&batch)).unwrap();
    let got = b.forward(Slot::W).unwrap();
    // The same samples as a problem of their own.
    let x: Vec<f32> = match &p.features {
        Features::Dense(x) => batch
            .iter()
            .flat_map(|&i| x[i as usize * p.d..(i as usize + 1) * p.d].to_vec())
            .collect(),
        _ => unreachable!(),
    };
    let y: Vec<f32> = batch.iter().map(|&i| p.y[i as usize]).collect();
    let sub =
        Arc::new(Problem::new(p.d, p.m, Features::Dense(x), y, p.gates, p.gate_seed).unwrap());
    let mut c = CpuBackend::new(sub, s, 0).unwrap();
    c.load(Slot::W, &w).unwrap();
    let want = c.forward(Slot::W).unwrap();
    assert!(rel(got, want) < 1e-6);
    b.threshold(Slot::W, 0.1, s, Slot::V).unwrap();
    c.threshold(Slot::W, 0.1, s, Slot::V).unwrap();
    assert_eq!(b.read(Slot::V).unwrap(), c.read(Slot::V).unwrap());
}

#[test]
fn all_gates_closed_gives_zero_gradient() {
    for budget in BUDGETS {
        all_gates_closed(budget);
    }
}

fn all_gates_closed(budget: u64) {
    // Weight gates that are all zero close every neuron: A = 0, so c = w and the loss is ‖y‖².
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let p = Arc::new(problems(&mut rng).remove(1));
    let s = 5;
    let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
    let w = random_sparse(&mut rng, p.m * p.d, s);
    b.load(Slot::W, &w).unwrap();
    b.load(Slot::BEST, &SparseVec::new()).unwrap();
    b.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
    let loss = b.forward(Slot::W).unwrap();
    let y2: f64 = p.y.iter().map(|&v| (v as f64).powi(2)).sum();
    assert!(rel(loss, y2) < 1e-6);
    b.threshold(Slot::W, 1.0, s, Slot::V).unwrap();
    assert_eq!(b.read(Slot::V).unwrap(), w);
}
