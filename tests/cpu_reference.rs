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
        given: Vec::new(),
    };
    let g = spec.grid(&[9, 11, 3]).unwrap();
    let y: Vec<f32> = (0..g.n()).map(|_| rng.random_range(0.0f32..1.0)).collect();
    out.push(Problem::new(10, 6, Features::Grid(g), y, GateMode::Sequential, 5).unwrap());
    out
}

/// [`problems`] and a sequential problem of `n` samples with `d` dense random features and `m`
/// neurons, sized for what a test needs to cross (pass blocks, mask words).
fn problems_and_sequential(rng: &mut impl Rng, n: usize, d: usize, m: usize) -> Vec<Problem> {
    let mut probs = problems(rng);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    probs.push(Problem::new(d, m, Features::Dense(x), y, GateMode::Sequential, 8).unwrap());
    probs
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

/// The fused refinement (one pass per step, residual and gradient carried by recurrence), on
/// the column and the row path, against the trait's loop (a fresh `A_S` product per trial), on
/// every problem, support size and gate kind, with and without a minibatch. Records, iterate,
/// gradient slot and the residual it leaves current agree to f32 rounding; the records follow
/// the trait's rules; and the fused version is bit-deterministic.
#[test]
fn fused_refinement_follows_the_trait_loop() {
    for budget in BUDGETS {
        fused_refinement_follows(budget);
    }
}

fn fused_refinement_follows(budget: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    // More samples than one fused block (256), not a multiple of 64.
    let probs = problems_and_sequential(&mut rng, 517, 11, 7);
    let mut cases = 0;
    for p in probs {
        let p = Arc::new(p);
        let len = p.m * p.d;
        for &s in &[1usize, len / 2, len] {
            for (weight_gates, batched) in [(false, false), (true, false), (false, true)] {
                let tag = format!(
                    "n {} d {} m {} s {s} wg {weight_gates} batch {batched}",
                    p.n, p.d, p.m
                );
                let w = random_sparse(&mut rng, len, s);
                let h = random_sparse(&mut rng, len, len.div_ceil(2));
                let junk = random_sparse(&mut rng, len, s);
                let batch: Vec<u32> =
                    rand::seq::index::sample(&mut rng, p.n, p.n.div_ceil(3).max(1))
                        .into_iter()
                        .map(|i| i as u32)
                        .collect();
                // The gates and samples of the case on a fresh backend, with `v` loaded.
                let new_backend = |budget: u64, v: &SparseVec| {
                    let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
                    if weight_gates && p.gates != GateMode::Gaussian {
                        b.load(Slot::BEST, &h).unwrap();
                        b.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
                    }
                    if batched {
                        b.set_batch(Some(&batch)).unwrap();
                    }
                    b.load(Slot::V, v).unwrap();
                    b
                };
                let mut fused = new_backend(budget, &w);
                let mut host = new_backend(0, &w);
                let mut starts = Vec::new();
                for b in [&mut fused, &mut host] {
                    b.load(Slot::G, &junk).unwrap();
                    b.load(Slot::TRIAL, &junk).unwrap();
                    starts.push(b.forward(Slot::V).unwrap());
                }
                let f0 = starts[0];
                assert!(
                    rel(f0, starts[1]) < 1e-12,
                    "{tag}: the same forward on both paths"
                );
                let steps = 6;
                let rf = fused
                    .refine_exact(Slot::V, Slot::G, Slot::TRIAL, f0, steps)
                    .unwrap();
                let rh = spinr::backend::refine_exact_host(
                    &mut host,
                    Slot::V,
                    Slot::G,
                    Slot::TRIAL,
                    f0,
                    steps,
                )
                .unwrap();
                // The trait's rules, on the fused records themselves.
                let mut f_v = f0;
                for (i, r) in rf.iter().enumerate() {
                    let ok = spinr::backend::armijo_accepts(f_v, r.f_t, r.mu, r.gn);
                    assert_eq!(r.accepted, ok, "{tag}: record {i} decided by Armijo");
                    assert!(
                        r.accepted || i + 1 == rf.len(),
                        "{tag}: only the last is rejected"
                    );
                    if r.accepted {
                        f_v = r.f_t;
                    }
                }
                assert!(rf.len() == steps || rf.last().is_some_and(|r| !r.accepted));
                // Against the trait loop, while above the f32 floor.
                let (g0, c0) = (rh[0].gn, rh[0].curv);
                for (i, (a, b)) in rf.iter().zip(&rh).enumerate() {
                    // Past the floor (the gradient has vanished to rounding), the two
                    // paths' rounding decides acceptance.
                    if a.gn.min(b.gn) < 1e-8 * g0 || a.f_t.min(b.f_t) < 1e-6 * f0 {
                        break;
                    }
                    assert_eq!(a.accepted, b.accepted, "{tag}: record {i} accepted");
                    let close =
                        |x: f64, y: f64, scale: f64| (x - y).abs() <= 1e-4 * scale.max(1e-30);
                    assert!(
                        close(a.gn, b.gn, g0),
                        "{tag}: record {i} gn {} vs {}",
                        a.gn,
                        b.gn
                    );
                    assert!(
                        close(a.curv, b.curv, c0),
                        "{tag}: record {i} curv {} vs {}",
                        a.curv,
                        b.curv
                    );
                    assert!(
                        close(a.f_t, b.f_t, f0),
                        "{tag}: record {i} f_t {} vs {}",
                        a.f_t,
                        b.f_t
                    );
                    assert!(
                        rel(a.mu as f64, b.mu as f64) < 1e-3,
                        "{tag}: record {i} mu {} vs {}",
                        a.mu,
                        b.mu
                    );
                    cases += 1;
                }
                if rf.len() == rh.len() && rf.iter().zip(&rh).all(|(a, b)| a.accepted == b.accepted)
                {
                    let (vf, vh) = (fused.read(Slot::V).unwrap(), host.read(Slot::V).unwrap());
                    assert_eq!(vf.indices, vh.indices, "{tag}: iterate support");
                    let scale = vh
                        .values
                        .iter()
                        .fold(0f32, |a, &v| a.max(v.abs()))
                        .max(1e-6);
                    for (a, b) in vf.values.iter().zip(&vh.values) {
                        assert!((a - b).abs() <= 1e-3 * scale, "{tag}: iterate {a} vs {b}");
                    }
                }
                // The residual left current is the iterate's: a fresh product agrees with the
                // last accepted loss, and a step size from it with a fresh gradient.
                let last = rf.iter().rev().find(|r| r.accepted).map_or(f0, |r| r.f_t);
                let (gn, _) = fused.step_size(Slot::V, Slot::G).unwrap();
                let mut check = new_backend(0, &fused.read(Slot::V).unwrap());
                let fresh = check.forward(Slot::V).unwrap();
                let (gn_fresh, _) = check.step_size(Slot::V, Slot::G).unwrap();
                assert!(
                    (fresh - last).abs() <= 1e-5 * f0 + 1e-12,
                    "{tag}: loss {fresh} vs {last}"
                );
                assert!(
                    (gn - gn_fresh).abs() <= 1e-4 * g0 + 1e-20,
                    "{tag}: gradient {gn} vs {gn_fresh}"
                );
                // Bit-deterministic.
                let mut again = new_backend(budget, &w);
                let fa = again.forward(Slot::V).unwrap();
                let ra = again
                    .refine_exact(Slot::V, Slot::G, Slot::TRIAL, fa, steps)
                    .unwrap();
                assert_eq!(format!("{ra:?}"), format!("{rf:?}"), "{tag}: deterministic");
            }
        }
    }
    assert!(cases > 50, "only {cases} records compared");
}

/// A zero gradient (every gate closed) is rejected at once on the fused path, leaving the
/// iterate, its residual and a zero gradient in place.
#[test]
fn fused_refinement_stops_on_a_zero_gradient() {
    for budget in BUDGETS {
        stops_on_a_zero_gradient(budget);
    }
}

fn stops_on_a_zero_gradient(budget: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let p = Arc::new(problems(&mut rng).remove(1));
    let s = 5;
    let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
    let w = random_sparse(&mut rng, p.m * p.d, s);
    b.load(Slot::G, &random_sparse(&mut rng, p.m * p.d, s))
        .unwrap();
    b.load(Slot::V, &w).unwrap();
    b.load(Slot::BEST, &SparseVec::new()).unwrap();
    b.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
    let f = b.forward(Slot::V).unwrap();
    let recs = b.refine_exact(Slot::V, Slot::G, Slot::TRIAL, f, 4).unwrap();
    assert_eq!(recs.len(), 1);
    assert!(!recs[0].accepted && recs[0].gn == 0.0);
    assert_eq!(b.read(Slot::V).unwrap(), w);
    let g = b.read(Slot::G).unwrap();
    assert_eq!(g.indices, w.indices);
    assert!(g.values.iter().all(|&v| v == 0.0));
    assert_eq!(b.forward(Slot::V).unwrap(), f);
}

#[test]
fn trials_along_a_held_direction_match_fresh_ones() {
    for budget in BUDGETS {
        held_direction_trials(budget);
    }
}

/// The loss of `x` from a backend that has computed nothing yet (gates from `gates`, or the
/// random ones).
fn fresh_loss(
    p: &Arc<Problem>,
    budget: u64,
    gates: Option<&SparseVec>,
    batch: &[u32],
    x: &SparseVec,
) -> f64 {
    let mut c = CpuBackend::new(p.clone(), p.m * p.d, budget).unwrap();
    if let Some(h) = gates {
        c.load(Slot::BEST, h).unwrap();
        c.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
    }
    c.set_batch(Some(batch)).unwrap();
    c.load(Slot::W, x).unwrap();
    c.forward(Slot::W).unwrap()
}

/// A trial from the point whose residual is current, along a direction a pass already applied
/// (`step_size`, `curvature`), is `r − μ·A_S g` without a pass: it must give the loss of the
/// trial point computed afresh, and every change that makes a held vector stale (a new
/// direction in the slot, new gates, a new point) must be noticed.
fn held_direction_trials(budget: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for p in problems(&mut rng) {
        let p = Arc::new(p);
        let len = p.m * p.d;
        let s = (len / 3).max(1);
        let w = random_sparse(&mut rng, len, s);
        let gates = random_sparse(&mut rng, len, s);
        // An awkward batch: unsorted, not a multiple of 64.
        let mut batch: Vec<u32> = rand::seq::index::sample(&mut rng, p.n, p.n * 2 / 3)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        batch.reverse();
        let start = |w: &SparseVec| {
            let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
            b.load(Slot::BEST, &gates).unwrap();
            b.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
            b.set_batch(Some(&batch)).unwrap();
            b.load(Slot::W, w).unwrap();
            b.forward(Slot::W).unwrap();
            b.step_size(Slot::W, Slot::G).unwrap();
            b
        };
        let check = |b: &mut CpuBackend, gated: bool, mu: f32, recompute: bool, what: &str| {
            let (_, got) = b
                .trial(Slot::W, Slot::G, Slot::TRIAL, mu, recompute)
                .unwrap();
            let x = b.read(Slot::TRIAL).unwrap();
            let want = fresh_loss(&p, budget, gated.then_some(&gates), &batch, &x);
            assert!(
                rel(got, want) < 1e-5,
                "{what} (n = {}, budget {budget}): trial loss {got} against {want}",
                p.n
            );
        };
        let mut b = start(&w);
        // Backtracks along the held direction.
        for mu in [0.3f32, 0.15, 0.075] {
            check(&mut b, true, mu, false, "backtrack");
        }
        // A new direction in the same slot (same support, other values).
        let mut g2 = b.read(Slot::G).unwrap();
        g2.values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
        b.load(Slot::G, &g2).unwrap();
        check(&mut b, true, 0.2, false, "new direction");
        // A copy carries the direction along: START holds the same vector.
        b.copy(Slot::START, Slot::G).unwrap();
        b.curvature(Slot::START).unwrap();
        check(&mut b, true, 0.1, false, "copied direction");
        // Accepting moves the point; the next trial recomputes the gradient there.
        b.accept_trial().unwrap();
        b.copy(Slot::W, Slot::TRIAL).unwrap();
        check(&mut b, true, 0.1, true, "after acceptance");
        // New gates: the held residual and direction are stale.
        b.set_gates(GateSource::Random).unwrap();
        check(&mut b, false, 0.1, false, "after new gates");
        // A new point loaded into W: its residual is not the current one.
        let mut b = start(&w);
        let mut w2 = w.clone();
        w2.values.iter_mut().for_each(|v| *v *= -0.5);
        b.load(Slot::W, &w2).unwrap();
        check(&mut b, true, 0.2, false, "new point");
    }
}

/// Everything a minibatch update reads back, as bits: losses, step-size halves, the trial's
/// point and the thresholded slot.
fn batch_update_bits(b: &mut CpuBackend, s: usize) -> Vec<u64> {
    let mut out = vec![b.forward(Slot::W).unwrap().to_bits()];
    let (gn, ag) = b.step_size(Slot::W, Slot::G).unwrap();
    out.extend([gn.to_bits(), ag.to_bits()]);
    let (g2, ft) = b.trial(Slot::W, Slot::G, Slot::TRIAL, 0.3, false).unwrap();
    out.extend([g2.to_bits(), ft.to_bits()]);
    b.threshold(Slot::W, 0.7, s, Slot::V).unwrap();
    for slot in [Slot::TRIAL, Slot::V] {
        let v = b.read(slot).unwrap();
        out.extend(v.indices.iter().map(|&i| i as u64));
        out.extend(v.values.iter().map(|x| x.to_bits() as u64));
    }
    out
}

/// An epoch's layout (`Backend::arrange`: the features laid out in the shuffle's order, each
/// batch a contiguous range of it) must give every pass bit for bit what a batch gathered on
/// its own gives: batches in order, a batch resumed mid-epoch, one that is not a range of the
/// layout (reversed), a short last batch, a layout set while a batch is in force, and a
/// layout built from a partial order (ignored).
#[test]
fn an_epochs_layout_gives_the_gathered_batches_bit_for_bit() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    // More samples than a pass block (256) and than a 64-sample mask word, odd n.
    let probs = problems_and_sequential(&mut rng, 1031, 9, 6);
    for p in probs {
        let p = Arc::new(p);
        let len = p.m * p.d;
        let s = (len / 3).max(1);
        let w = random_sparse(&mut rng, len, s);
        let h = random_sparse(&mut rng, len, s);
        let mut order: Vec<u32> = (0..p.n as u32).collect();
        use rand::seq::SliceRandom;
        order.shuffle(&mut rng);
        let b = p.n.div_ceil(3).max(2) - 1; // a short last batch
        let fresh = || {
            let mut c = CpuBackend::new(p.clone(), s, 1 << 30).unwrap();
            c.load(Slot::BEST, &h).unwrap();
            c.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
            c.load(Slot::W, &w).unwrap();
            c
        };
        let want = |batch: &[u32]| {
            let mut c = fresh();
            c.set_batch(Some(batch)).unwrap();
            batch_update_bits(&mut c, s)
        };
        let tag = format!("n {} d {} m {}", p.n, p.d, p.m);
        let chunks: Vec<&[u32]> = order.chunks(b).collect();
        // In order, then resumed at the second batch.
        for skip in [0, 1] {
            let mut c = fresh();
            c.arrange(&order).unwrap();
            for (k, chunk) in chunks.iter().enumerate().skip(skip) {
                c.set_batch(Some(chunk)).unwrap();
                assert_eq!(
                    batch_update_bits(&mut c, s),
                    want(chunk),
                    "{tag}: batch {k}"
                );
            }
            // Not a range of the layout: gathered on its own.
            let rev: Vec<u32> = chunks[0].iter().rev().copied().collect();
            c.set_batch(Some(&rev)).unwrap();
            assert_eq!(batch_update_bits(&mut c, s), want(&rev), "{tag}: reversed");
            // All samples again, then a new layout while a batch is in force.
            c.set_batch(None).unwrap();
            c.set_batch(Some(chunks[1])).unwrap();
            let reversed: Vec<u32> = order.iter().rev().copied().collect();
            c.arrange(&reversed).unwrap();
            assert_eq!(
                batch_update_bits(&mut c, s),
                want(chunks[1]),
                "{tag}: layout changed under a batch"
            );
        }
        // A partial order is no epoch: ignored, batches still right.
        let mut c = fresh();
        c.arrange(&order[..p.n / 2]).unwrap();
        c.set_batch(Some(chunks[0])).unwrap();
        assert_eq!(
            batch_update_bits(&mut c, s),
            want(chunks[0]),
            "{tag}: partial"
        );
    }
}

/// A forward pass of the very vector the gates were taken from (the sequential ReLU network
/// after an update) builds the gate masks in the same pass; everything after it (step sizes,
/// trials, the dense pass and its top-s) must be bit for bit what separately built masks give.
/// The other backend's gates come from a copy of the vector loaded on its own, so it builds
/// its masks in a pass of their own. All samples, a minibatch, and the epoch layout.
#[test]
fn a_forward_pass_that_builds_its_own_gate_masks_changes_no_bit() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let probs = problems_and_sequential(&mut rng, 777, 12, 5);
    for p in probs {
        let p = Arc::new(p);
        let len = p.m * p.d;
        for s in [1, (len / 3).max(1), len] {
            let w = random_sparse(&mut rng, len, s);
            let mut order: Vec<u32> = (0..p.n as u32).collect();
            use rand::seq::SliceRandom;
            order.shuffle(&mut rng);
            let batch = &order[..p.n.div_ceil(2)];
            for (batched, arranged) in [(false, false), (true, false), (true, true)] {
                let run = |own: bool| {
                    let mut c = CpuBackend::new(p.clone(), s, 1 << 30).unwrap();
                    c.load(Slot::W, &w).unwrap();
                    if own {
                        c.set_gates(GateSource::Slot(Slot::W)).unwrap();
                    } else {
                        c.load(Slot::BEST, &w).unwrap();
                        c.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
                    }
                    if arranged {
                        c.arrange(&order).unwrap();
                    }
                    if batched {
                        c.set_batch(Some(batch)).unwrap();
                    }
                    batch_update_bits(&mut c, s)
                };
                let tag = format!(
                    "n {} d {} m {} s {s} batch {batched} layout {arranged}",
                    p.n, p.d, p.m
                );
                let own = run(true);
                assert_eq!(own, run(false), "{tag}");
                // And the loss against the network computed naively: Σ_j relu(w_j · x).
                if p.gates == GateMode::Sequential && !batched {
                    let dense = w.to_dense(len);
                    let want: f64 = (0..p.n)
                        .map(|i| {
                            let mut xi = vec![0f32; p.d];
                            p.fill_row(i, &mut xi);
                            let f: f64 = (0..p.m)
                                .map(|j| {
                                    let z: f64 = (0..p.d)
                                        .map(|k| dense[j * p.d + k] as f64 * xi[k] as f64)
                                        .sum();
                                    z.max(0.0)
                                })
                                .sum();
                            (f - p.y[i] as f64).powi(2)
                        })
                        .sum();
                    let got = f64::from_bits(own[0]);
                    assert!(rel(got, want) < 1e-6, "{tag}: loss {got} against {want}");
                }
            }
        }
    }
}
