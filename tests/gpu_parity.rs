//! The GPU backend against the CPU backend (the oracle), through the `Backend` trait, on
//! random problems of awkward sizes: every kernel (forward, step_size, trial, threshold,
//! predict, the one-submission refinement batch), every gate kind (random, weight, open), dense and grid features (cached and on
//! the fly), minibatches, tiny and full `s`, ties, closed gates, and poisoned device state.
//!
//! Error bound: scalars (losses, norms) within `REL` relative; vectors within `REL` of their
//! largest magnitude. The GPU accumulates in f32, the CPU's support passes in f64.
//!
//! These tests need a GPU adapter; without one they fail (never skip) and say how to get one.

use rand::{Rng, SeedableRng};
use spinr::backend::cpu::CpuBackend;
use spinr::backend::gpu::{GpuBackend, GpuContext, GpuOptions, SupportOrder};
use spinr::backend::{
    armijo_accepts, normalised_step, refine_armijo_host, refine_exact_host, Backend, GateSource,
    RefineStep, Slot, StepRule,
};
use spinr::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use spinr::sparse::SparseVec;
use std::sync::Arc;

mod common;

/// Relative error bound of every comparison.
const REL: f64 = 1e-4;

fn ctx() -> Arc<GpuContext> {
    common::gpu_ctx()
}

/// Largest relative error seen per kind of comparison (printed by the main test).
static WORST: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());

fn note(kind: &str, err: f64) {
    let mut w = WORST.lock().unwrap();
    match w.iter_mut().find(|(k, _)| k == kind) {
        Some((_, e)) => *e = e.max(err),
        None => w.push((kind.to_string(), err)),
    }
}

/// The comparison kind: the text after the last ": " of a message.
fn kind(what: &str) -> String {
    let k = what.rsplit(": ").next().unwrap_or(what);
    k.split(" #").next().unwrap_or(k).to_string()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= REL * a.abs().max(b.abs()) + 1e-12
}

#[track_caller]
fn assert_scalar(what: &str, gpu: f64, cpu: f64) {
    note(
        &kind(what),
        (gpu - cpu).abs() / gpu.abs().max(cpu.abs()).max(1e-30),
    );
    assert!(close(gpu, cpu), "{what}: gpu {gpu} vs cpu {cpu}");
}

/// Same indices; values within REL of the largest magnitude.
#[track_caller]
fn assert_vec(what: &str, gpu: &SparseVec, cpu: &SparseVec) {
    assert_eq!(gpu.indices, cpu.indices, "{what}: supports differ");
    let scale = cpu.values.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let worst = gpu
        .values
        .iter()
        .zip(&cpu.values)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    note(&kind(what), worst / scale.max(1e-30));
    for (k, (&a, &b)) in gpu.values.iter().zip(&cpu.values).enumerate() {
        assert!(
            (a as f64 - b as f64).abs() <= REL * scale + 1e-12,
            "{what}: entry {} (index {}): gpu {a} vs cpu {b} (scale {scale})",
            k,
            cpu.indices[k]
        );
    }
}

#[track_caller]
fn assert_dense(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let worst = gpu
        .iter()
        .zip(cpu)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    note(&kind(what), worst / scale.max(1e-30));
    for (i, (&a, &b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (a as f64 - b as f64).abs() <= REL * scale + 1e-12,
            "{what}: sample {i}: gpu {a} vs cpu {b} (scale {scale})"
        );
    }
}

/// Top-s supports must be equal. The one allowance: the two backends round `c` differently
/// (f32 sums in another order), so two candidates whose |c| agree to within 1e-5 relative at
/// the selection boundary may swap. Every such swap is checked to be at the boundary and
/// counted; exact ties (identical |c|) must always resolve identically (lower index).
#[track_caller]
fn assert_topk(what: &str, gpu: &SparseVec, cpu: &SparseVec, swaps: &mut usize) {
    if gpu.indices == cpu.indices {
        assert_vec(what, gpu, cpu);
        return;
    }
    assert_eq!(gpu.len(), cpu.len(), "{what}: sizes differ");
    let boundary = cpu
        .values
        .iter()
        .fold(f64::INFINITY, |m, &v| m.min(v.abs() as f64));
    let only = |a: &SparseVec, b: &SparseVec| -> Vec<f64> {
        a.indices
            .iter()
            .zip(&a.values)
            .filter(|(i, _)| b.indices.binary_search(i).is_err())
            .map(|(_, &v)| v.abs() as f64)
            .collect()
    };
    let diff: Vec<f64> = only(gpu, cpu).into_iter().chain(only(cpu, gpu)).collect();
    for &v in &diff {
        assert!(
            (v - boundary).abs() <= 1e-5 * boundary,
            "{what}: supports differ away from the selection boundary (|c| {v} vs s-th {boundary})\n\
             gpu {gpu:?}\ncpu {cpu:?}"
        );
    }
    assert!(diff.len() <= 4, "{what}: {} boundary swaps", diff.len() / 2);
    *swaps += diff.len() / 2;
}

fn random_sparse(rng: &mut impl Rng, len: usize, s: usize) -> SparseVec {
    let idx = rand::seq::index::sample(rng, len, s);
    SparseVec::from_pairs(
        idx.into_iter()
            .map(|i| (i as u32, rng.random_range(-1.0f32..1.0)))
            .collect(),
    )
}

/// `nnz` entries of magnitude 0, ½ or 1 and either sign: many ties for a selection.
fn tied_sparse(rng: &mut impl Rng, len: usize, nnz: usize) -> SparseVec {
    let idx = rand::seq::index::sample(rng, len, nnz);
    SparseVec::from_pairs(
        idx.into_iter()
            .map(|i| {
                let mag = rng.random_range(0..3) as f32 * 0.5;
                (i as u32, if rng.random() { mag } else { -mag })
            })
            .collect(),
    )
}

/// Junk with as many entries as the slots hold: stale values or lengths would show.
fn junk(rng: &mut impl Rng, len: usize, s: usize) -> SparseVec {
    let idx = rand::seq::index::sample(rng, len, s);
    SparseVec::from_pairs(
        idx.into_iter()
            .map(|i| (i as u32, rng.random_range(-1e6f32..1e6)))
            .collect(),
    )
}

struct Case {
    name: String,
    problem: Problem,
    opts: GpuOptions,
}

fn dense_problem(rng: &mut impl Rng, gates: GateMode, n: usize, d: usize, m: usize) -> Problem {
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Problem::new(d, m, Features::Dense(x), y, gates, rng.random()).unwrap()
}

fn grid_problem(
    rng: &mut impl Rng,
    gates: GateMode,
    axes: &[usize],
    sigma: &[f64],
    d: usize,
    m: usize,
) -> Problem {
    let spec = FourierSpec {
        d,
        seed: rng.random(),
        sigma: sigma.to_vec(),
        coords: (0..axes.len())
            .map(|a| {
                if a == 0 {
                    AxisCoords::Unit
                } else {
                    AxisCoords::Integer
                }
            })
            .collect(),
        constant_feature: true,
        given: Vec::new(),
    };
    let g = spec.grid(axes).unwrap();
    let y: Vec<f32> = (0..g.n()).map(|_| rng.random_range(0.0f32..1.0)).collect();
    Problem::new(d, m, Features::Grid(g), y, gates, rng.random()).unwrap()
}

fn on_the_fly(tile: Option<usize>) -> GpuOptions {
    GpuOptions {
        feature_cache_bytes: 0,
        tile_neurons: tile,
        ..Default::default()
    }
}

fn tiles(t: usize) -> GpuOptions {
    GpuOptions {
        tile_neurons: Some(t),
        ..Default::default()
    }
}

/// Dense-pass chunks of `c` active samples (rounded up to 32).
fn sample_chunks(mut o: GpuOptions, c: usize) -> GpuOptions {
    o.mask_chunk = Some(c);
    o
}

/// The support apply split into chunks of runs (what hardware GPUs do with small n).
fn chunked(mut o: GpuOptions) -> GpuOptions {
    o.apply_threads = Some(1 << 16);
    o
}

/// The support visited feature by feature (`apply_f` and the per-feature lists).
fn by_feature(mut o: GpuOptions) -> GpuOptions {
    o.support_order = SupportOrder::Feature;
    o
}

fn cases(rng: &mut impl Rng) -> Vec<Case> {
    let def = GpuOptions::default();
    let mut out = vec![
        Case {
            name: "convex dense 37×13, m 5".into(),
            problem: dense_problem(rng, GateMode::Convex, 37, 13, 5),
            opts: def,
        },
        Case {
            // Dense-pass chunks of 64 samples (64, 64, 3): partial rows accumulate.
            name: "sequential dense 131×7, m 9, chunked apply, sample chunks".into(),
            problem: dense_problem(rng, GateMode::Sequential, 131, 7, 9),
            opts: sample_chunks(chunked(def), 33),
        },
        Case {
            name: "gaussian 53×29".into(),
            problem: dense_problem(rng, GateMode::Gaussian, 53, 29, 1),
            opts: def,
        },
        Case {
            // d > 2048: the dense pass splits features across workgroups (grid y).
            name: "gaussian 45×2100".into(),
            problem: dense_problem(rng, GateMode::Gaussian, 45, 2100, 1),
            opts: def,
        },
        Case {
            // Six tiles of 8 neurons (the last one partial): the streaming merge.
            name: "convex dense 300×70, m 43, tiles of 8, chunked apply, sample chunks".into(),
            problem: dense_problem(rng, GateMode::Convex, 300, 70, 43),
            opts: sample_chunks(chunked(tiles(8)), 96),
        },
        Case {
            // Two tile_mask neuron groups; the subgroup case below runs the other word path
            // on adapters with 32-wide subgroups.
            name: "sequential dense 97×33, m 70, portable mask words".into(),
            problem: dense_problem(rng, GateMode::Sequential, 97, 33, 70),
            opts: GpuOptions {
                subgroups: false,
                ..Default::default()
            },
        },
        Case {
            name: "sequential dense 97×33, m 70, subgroup mask words where the adapter has them"
                .into(),
            problem: dense_problem(rng, GateMode::Sequential, 97, 33, 70),
            opts: def,
        },
        Case {
            // Several 128 × 128 product blocks per tile, both partial at the edges.
            name: "convex dense 75×150, m 140".into(),
            problem: dense_problem(rng, GateMode::Convex, 75, 150, 140),
            opts: def,
        },
    ];
    out.push(Case {
        // 36-byte rows, 34 rows a binding: the features span three bindings.
        // Loaded and read back in blocks of 13 samples, which straddle the bindings.
        name: "convex dense 101×9, m 7, X in three bindings, blocks of 13".into(),
        problem: dense_problem(rng, GateMode::Convex, 101, 9, 7),
        opts: GpuOptions {
            feature_binding_bytes: Some(34 * 36),
            move_block_samples: Some(13),
            ..Default::default()
        },
    });
    out.push(Case {
        // Sample-major X (what minibatch fits use): 36-byte rows, 34 a binding.
        name: "sequential dense 101×9, m 7, X sample-major in three bindings, blocks of 13".into(),
        problem: dense_problem(rng, GateMode::Sequential, 101, 9, 7),
        opts: GpuOptions {
            feature_binding_bytes: Some(34 * 36),
            move_block_samples: Some(13),
            feature_major: false,
            ..Default::default()
        },
    });
    out.push(Case {
        name: "convex dense 75×150, m 140, X sample-major".into(),
        problem: dense_problem(rng, GateMode::Convex, 75, 150, 140),
        opts: GpuOptions {
            feature_major: false,
            ..Default::default()
        },
    });
    let g3 = grid_problem(
        rng,
        GateMode::Sequential,
        &[9, 11, 3],
        &[2.0, 3.0, 0.05],
        10,
        6,
    );
    out.push(Case {
        name: "grid 9×11×3 cached, m 6".into(),
        problem: g3.clone(),
        opts: def,
    });
    out.push(Case {
        // The cached grid generated and loaded 40 samples at a time.
        name: "grid 9×11×3 cached in blocks of 40, m 6".into(),
        problem: g3.clone(),
        opts: GpuOptions {
            move_block_samples: Some(40),
            ..def
        },
    });
    out.push(Case {
        name: "grid 9×11×3 on the fly, m 6".into(),
        problem: g3,
        opts: on_the_fly(None),
    });
    out.push(Case {
        name: "grid 17×19 on the fly, d 34, m 12, tiles of 8, chunked apply".into(),
        problem: grid_problem(rng, GateMode::Convex, &[17, 19], &[2.0, 2.0], 34, 12),
        opts: chunked(on_the_fly(Some(8))),
    });
    // Cases added later come last, so that earlier ones keep their random draws.
    out.push(Case {
        // s > d: most features have several entries, split into 7 chunks of one feature.
        name: "sequential dense 131×7, m 9, by feature, chunked apply".into(),
        problem: dense_problem(rng, GateMode::Sequential, 131, 7, 9),
        opts: by_feature(chunked(def)),
    });
    out.push(Case {
        name: "convex dense 75×150, m 140, by feature".into(),
        problem: dense_problem(rng, GateMode::Convex, 75, 150, 140),
        opts: by_feature(def),
    });
    out.push(Case {
        // d beyond the radix select's HIST_BINS counters.
        name: "gaussian 45×2100, by feature".into(),
        problem: dense_problem(rng, GateMode::Gaussian, 45, 2100, 1),
        opts: by_feature(def),
    });
    out.push(Case {
        // Features generated once per sample and feature, not per entry.
        name: "grid 17×19 on the fly, d 34, m 12, by feature, chunked apply".into(),
        problem: grid_problem(rng, GateMode::Sequential, &[17, 19], &[2.0, 2.0], 34, 12),
        opts: by_feature(chunked(on_the_fly(None))),
    });
    out
}

struct Pair {
    gpu: GpuBackend,
    cpu: CpuBackend,
}

impl Pair {
    fn new(p: &Arc<Problem>, s: usize, opts: GpuOptions) -> Pair {
        Pair {
            gpu: GpuBackend::with_options(ctx(), p.clone(), s, opts).unwrap(),
            cpu: CpuBackend::new(p.clone(), s, 0).unwrap(),
        }
    }

    fn both<T>(&mut self, f: impl Fn(&mut dyn Backend) -> spinr::Result<T>) -> (T, T) {
        (f(&mut self.gpu).unwrap(), f(&mut self.cpu).unwrap())
    }

    #[track_caller]
    fn read(&mut self, what: &str, slot: Slot) {
        let (g, c) = self.both(|b| b.read(slot));
        assert_vec(what, &g, &c);
    }
}

/// Puts junk in every GPU slot and both residual buffers.
fn poison(pair: &mut Pair, rng: &mut impl Rng, len: usize, s: usize) {
    let gpu = &mut pair.gpu;
    for q in 0..Slot::PREV.0 {
        gpu.load(Slot(q), &junk(rng, len, s)).unwrap();
    }
    // Slots added later draw from their own generator, so that the cases after them stay the
    // ones the bounds were measured on.
    let mut own = rand::rngs::StdRng::seed_from_u64(len as u64 ^ s as u64);
    for q in Slot::PREV.0..Slot::COUNT as u8 {
        gpu.load(Slot(q), &junk(&mut own, len, s)).unwrap();
    }
    gpu.forward(Slot::W).unwrap();
    gpu.trial(Slot::W, Slot::G, Slot::TRIAL, 0.5, false)
        .unwrap();
}

/// Runs every trait operation on both backends and compares.
fn exercise(
    pair: &mut Pair,
    p: &Problem,
    s: usize,
    rng: &mut impl Rng,
    swaps: &mut usize,
    tag: &str,
) {
    let len = p.m * p.d;
    let (fg, fc) = pair.both(|b| b.forward(Slot::W));
    assert_scalar(&format!("{tag}: forward"), fg, fc);

    let ((gg, cg), (gc, cc)) = pair.both(|b| b.step_size(Slot::W, Slot::G));
    assert_scalar(&format!("{tag}: ‖g‖²"), gg, gc);
    assert_scalar(&format!("{tag}: ‖A g‖²"), cg, cc);
    pair.read(&format!("{tag}: gradient slot"), Slot::G);
    let mu = (gc / (cc + 1e-8)) as f32;

    let ((ga, ta), (gb, tb)) = pair.both(|b| b.trial(Slot::W, Slot::G, Slot::TRIAL, mu, false));
    assert_scalar(&format!("{tag}: trial ‖g‖²"), ga, gb);
    assert_scalar(&format!("{tag}: trial loss"), ta, tb);
    pair.read(&format!("{tag}: trial slot"), Slot::TRIAL);
    let ((ga, ta), (gb, tb)) =
        pair.both(|b| b.trial(Slot::W, Slot::G, Slot::TRIAL, 0.5 * mu, true));
    assert_scalar(&format!("{tag}: trial (recomputed) ‖g‖²"), ga, gb);
    assert_scalar(&format!("{tag}: trial (recomputed) loss"), ta, tb);

    // Dense pass from the current residual (W's), then from the accepted trial's.
    for (k, &(mu_t, s_t)) in [(mu, s), (1e-14, s), (mu, 1), (mu, (s / 2).max(1))]
        .iter()
        .enumerate()
    {
        pair.both(|b| b.threshold(Slot::W, mu_t, s_t, Slot::V));
        let (g, c) = pair.both(|b| b.read(Slot::V));
        assert_topk(
            &format!("{tag}: threshold #{k} (μ {mu_t}, s {s_t})"),
            &g,
            &c,
            swaps,
        );
    }
    pair.both(|b| b.accept_trial());
    pair.both(|b| b.threshold(Slot::W, mu, s, Slot::START));
    let (g, c) = pair.both(|b| b.read(Slot::START));
    assert_topk(&format!("{tag}: threshold after accept"), &g, &c, swaps);
    // A support that came from the device (threshold output) through the support passes.
    pair.both(|b| b.copy(Slot::V, Slot::START));
    let (fg, fc) = pair.both(|b| b.forward(Slot::V));
    assert_scalar(&format!("{tag}: forward of the thresholded vector"), fg, fc);
    if g.indices == c.indices {
        let ((gg, _), (gc, _)) = pair.both(|b| b.step_size(Slot::V, Slot::G));
        assert_scalar(&format!("{tag}: ‖g‖² on the new support"), gg, gc);
    }

    let (pg, pc) = pair.both(|b| b.predict(Slot::W));
    assert_dense(&format!("{tag}: predict"), &pg, &pc);
    pair.both(|b| b.copy(Slot::BEST, Slot::W));
    pair.read(&format!("{tag}: copy"), Slot::BEST);

    // The residual without its loss serves the same step size as a forward pass, and the GPU
    // does not wait for it.
    pair.both(|b| b.forward(Slot::W));
    let ((gf, cf), _) = pair.both(|b| b.step_size(Slot::W, Slot::G));
    let trips = pair.gpu.round_trips();
    pair.both(|b| b.residual(Slot::W));
    assert_eq!(
        pair.gpu.round_trips(),
        trips,
        "{tag}: residual waited for the GPU"
    );
    let ((gr, cr), (gc, cc)) = pair.both(|b| b.step_size(Slot::W, Slot::G));
    assert_scalar(&format!("{tag}: ‖g‖² after residual"), gr, gc);
    assert_scalar(&format!("{tag}: ‖A g‖² after residual"), cr, cc);
    assert_eq!(
        (gr, cr),
        (gf, cf),
        "{tag}: residual and forward differ on the GPU"
    );

    // The step size and the dense pass in one call: the GPU keeps μ and does not wait; each
    // backend selects what `threshold` selects with the μ its `step_size` gave.
    let trips = pair.gpu.round_trips();
    pair.both(|b| b.threshold_normalised(Slot::W, Slot::G, s, Slot::V));
    assert_eq!(
        pair.gpu.round_trips(),
        trips,
        "{tag}: threshold_normalised waited"
    );
    pair.read(
        &format!("{tag}: threshold_normalised's gradient slot"),
        Slot::G,
    );
    let (g, c) = pair.both(|b| b.read(Slot::V));
    assert_topk(&format!("{tag}: threshold_normalised"), &g, &c, swaps);
    pair.gpu
        .threshold(Slot::W, normalised_step(gr, cr), s, Slot::START)
        .unwrap();
    pair.cpu
        .threshold(Slot::W, normalised_step(gc, cc), s, Slot::START)
        .unwrap();
    let (gt, ct) = pair.both(|b| b.read(Slot::START));
    assert_eq!(c, ct, "{tag}: cpu threshold_normalised");
    assert_topk(
        &format!("{tag}: threshold_normalised against μ"),
        &g,
        &gt,
        swaps,
    );
    let _ = (rng, len);
}

#[test]
fn every_kernel_matches_the_cpu() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261125);
    let mut swaps = 0;
    let mut checked = 0;
    for case in cases(&mut rng) {
        let p = Arc::new(case.problem.clone());
        let len = p.m * p.d;
        let mut sizes = vec![1usize, 3, len / 2, len];
        sizes.dedup();
        for &s in &sizes {
            // 0: random gates; 1: weight gates from another slot; 2: weight gates from W
            // itself (the sequential step: the dense pass reuses W's cached gate mask).
            let gate_kinds: &[u8] = if p.gates == GateMode::Gaussian {
                &[0]
            } else {
                &[0, 1, 2]
            };
            for &gate_kind in gate_kinds {
                let tag = format!(
                    "{} s {s} {}",
                    case.name,
                    ["random gates", "weight gates", "weight gates from W"][gate_kind as usize]
                );
                let mut pair = Pair::new(&p, s, case.opts);
                poison(&mut pair, &mut rng, len, s);
                let w = random_sparse(&mut rng, len, s);
                let h = random_sparse(&mut rng, len, s);
                pair.both(|b| b.load(Slot::W, &w));
                pair.both(|b| b.load(Slot::BEST, &h));
                let gates = match gate_kind {
                    0 => GateSource::Random,
                    1 => GateSource::Slot(Slot::BEST),
                    _ => GateSource::Slot(Slot::W),
                };
                pair.both(|b| b.set_gates(gates));
                exercise(&mut pair, &p, s, &mut rng, &mut swaps, &tag);

                // Minibatch: an unsorted subset of awkward size, then back to all samples.
                let nb = (p.n / 3).max(1) + 1;
                let batch: Vec<u32> = rand::seq::index::sample(&mut rng, p.n, nb.min(p.n))
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                pair.both(|b| b.load(Slot::W, &w));
                pair.both(|b| b.set_batch(Some(&batch)));
                exercise(
                    &mut pair,
                    &p,
                    s,
                    &mut rng,
                    &mut swaps,
                    &format!("{tag}, batch {nb}"),
                );
                pair.both(|b| b.set_batch(None));
                let (fg, fc) = pair.both(|b| b.forward(Slot::W));
                assert_scalar(&format!("{tag}: forward after the batch"), fg, fc);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} configurations; {swaps} top-s boundary swaps (|c| equal to 1e-5)");
    for (k, e) in WORST.lock().unwrap().iter() {
        eprintln!("  worst relative error  {e:.2e}  {k}");
    }
    assert!(swaps <= 3, "too many boundary swaps: {swaps}");
}

/// Exact ties in |c| (μ = 0: c = w with repeated magnitudes and many zeros) resolve to the
/// lower index, identically on both backends, including across tiles.
#[test]
fn ties_go_to_the_lower_index() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for opts in [GpuOptions::default(), tiles(8)] {
        let p = Arc::new(dense_problem(&mut rng, GateMode::Convex, 41, 19, 23));
        let len = p.m * p.d;
        for &(nnz, s) in &[(30usize, 30usize), (30, 60), (100, 50), (1, 1), (5, len)] {
            let mut pair = Pair::new(&p, s, opts);
            poison(&mut pair, &mut rng, len, s);
            let w = tied_sparse(&mut rng, len, nnz.min(s));
            pair.both(|b| b.load(Slot::W, &w));
            pair.both(|b| b.forward(Slot::W));
            pair.both(|b| b.threshold(Slot::W, 0.0, s, Slot::V));
            let (g, c) = pair.both(|b| b.read(Slot::V));
            assert_eq!(g, c, "ties: nnz {nnz} s {s}");
            assert_eq!(c.len(), s.min(len));
        }
    }
}

/// The prune of an over-selecting step on the device against the host's `largest`: random
/// slots with ties (magnitudes 0, ½ and 1 of either sign), fewer entries than `s`, a full
/// slot (`s = m·d`), `s = 1`, in place and into a poisoned slot.
#[test]
fn prune_matches_the_host_selection() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for opts in [GpuOptions::default(), tiles(8)] {
        let p = Arc::new(dense_problem(&mut rng, GateMode::Convex, 37, 19, 23));
        let len = p.m * p.d;
        for &(nnz, s) in &[
            (30usize, 7usize),
            (30, 30),
            (30, 45),
            (1, 1),
            (len, len),
            (len, 200),
            (300, 1),
        ] {
            let mut pair = Pair::new(&p, len, opts);
            poison(&mut pair, &mut rng, len, len);
            let v = tied_sparse(&mut rng, len, nnz);
            let want = v.largest(s);
            for (src, dst) in [(Slot::TRIAL, Slot::V), (Slot::V, Slot::V)] {
                pair.both(|b| b.load(src, &v));
                let trips = pair.gpu.round_trips();
                pair.both(|b| b.prune(src, s, dst));
                assert_eq!(pair.gpu.round_trips(), trips, "prune waited for the GPU");
                let (g, c) = pair.both(|b| b.read(dst));
                assert_eq!(c, want, "cpu prune: nnz {nnz} s {s}");
                assert_eq!(g, want, "gpu prune ({src:?} into {dst:?}): nnz {nnz} s {s}");
                if src != dst {
                    let (g, _) = pair.both(|b| b.read(src));
                    assert_eq!(g, v, "gpu prune changed its source");
                }
            }
        }
    }
}

/// Momentum on the device against the host's extrapolation: `W` and `PREV` on overlapping
/// supports (an entry new to `W`, entries that left it), a first call that only records
/// `PREV`, an empty `PREV`, a full slot.
#[test]
fn momentum_matches_the_host_extrapolation() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let p = Arc::new(dense_problem(&mut rng, GateMode::Convex, 37, 19, 23));
    let len = p.m * p.d;
    for &(nw, np, beta) in &[
        (40usize, 40usize, 0.3f32),
        (1, 7, 0.5),
        (len, 200, 0.9),
        (60, 0, 0.25),
    ] {
        let mut pair = Pair::new(&p, len, GpuOptions::default());
        poison(&mut pair, &mut rng, len, len);
        let w = random_sparse(&mut rng, len, nw);
        let prev = random_sparse(&mut rng, len, np);
        pair.both(|b| b.load(Slot::W, &prev));
        pair.both(|b| b.momentum(beta, true));
        pair.read(&format!("momentum ({nw}, {np}): first PREV"), Slot::PREV);
        pair.both(|b| b.load(Slot::W, &w));
        let trips = pair.gpu.round_trips();
        pair.both(|b| b.momentum(beta, false));
        assert_eq!(pair.gpu.round_trips(), trips, "momentum waited for the GPU");
        let (g, c) = pair.both(|b| b.read(Slot::W));
        assert_eq!(c, w.extrapolate(&prev, beta), "cpu momentum");
        assert_vec(&format!("momentum ({nw}, {np}): W"), &g, &c);
        let (g, _) = pair.both(|b| b.read(Slot::PREV));
        assert_eq!(g, w, "gpu momentum: PREV is the W it started from");
        // The extrapolated W through a support pass.
        let (fg, fc) = pair.both(|b| b.forward(Slot::W));
        assert_scalar(&format!("momentum ({nw}, {np}): forward"), fg, fc);
    }
}

/// Targets replaced after the fact (`set_targets`, the polish of a model with DCT terms):
/// every pass after it sees the new targets, on both backends and across the blocks the
/// targets move in, the CPU exactly as a backend built with them, and `None` restores the
/// problem's own. Lengths and values that are not one finite target per sample are refused.
#[test]
fn replaced_targets_match_the_cpu() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let p = grid_problem(
        &mut rng,
        GateMode::Sequential,
        &[11, 13],
        &[3.0, 2.0],
        20,
        7,
    );
    let (n, len) = (p.n, p.m * p.d);
    let y2: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..1.5)).collect();
    let with_y2 = Arc::new(Problem {
        y: y2.clone(),
        ..p.clone()
    });
    let p = Arc::new(p);
    let opts = GpuOptions {
        move_block_samples: Some(13),
        ..Default::default()
    };
    let mut pair = Pair::new(&p, 40, opts);
    poison(&mut pair, &mut rng, len, 40);
    let mut fresh = CpuBackend::new(with_y2, 40, 0).unwrap();
    let w = random_sparse(&mut rng, len, 33);
    let passes = |b: &mut dyn Backend| -> spinr::Result<(f64, f64, f64, Vec<f32>)> {
        b.load(Slot::W, &w)?;
        b.set_gates(GateSource::Slot(Slot::W))?;
        let f = b.forward(Slot::W)?;
        let gn = b.gradient(Slot::W, Slot::G)?;
        let (t, _) = b.trial(Slot::W, Slot::G, Slot::TRIAL, 0.25, false)?;
        Ok((f, gn, t, b.predict(Slot::W)?))
    };
    let (g0, c0) = pair.both(passes);
    assert_scalar("forward, own targets", g0.0, c0.0);
    pair.both(|b| b.set_targets(Some(&y2)));
    let (g1, c1) = pair.both(passes);
    let f1 = passes(&mut fresh).unwrap();
    assert_eq!(
        c1, f1,
        "cpu: replaced targets differ from a backend built with them"
    );
    assert!(
        (c1.0 - c0.0).abs() > 1e-3 * c0.0,
        "the targets made no difference"
    );
    assert_scalar("forward, replaced targets", g1.0, c1.0);
    assert_scalar("gradient, replaced targets", g1.1, c1.1);
    assert_scalar("trial, replaced targets", g1.2, c1.2);
    assert_dense("predict, replaced targets", &g1.3, &c1.3);
    pair.both(|b| b.set_targets(None));
    let (g2, c2) = pair.both(passes);
    assert_eq!(c2, c0, "cpu: None did not restore the problem's targets");
    assert_scalar("forward, the problem's targets again", g2.0, g0.0);
    let mut bad = y2.clone();
    bad[n - 1] = f32::NAN;
    for (what, y) in [("one short", &y2[1..]), ("NaN", &bad[..])] {
        assert!(
            pair.gpu.set_targets(Some(y)).is_err(),
            "gpu took targets: {what}"
        );
        assert!(
            pair.cpu.set_targets(Some(y)).is_err(),
            "cpu took targets: {what}"
        );
    }
}

/// Weight gates that are closed on every sample (non-negative features, negative gate
/// weights) and neurons whose gate block is all zero (skipped by the dense pass).
#[test]
fn closed_gates() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let (n, d, m) = (70, 11, 13);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let p = Arc::new(Problem::new(d, m, Features::Dense(x), y, GateMode::Sequential, 3).unwrap());
    let len = m * d;
    for &s in &[1usize, 17, len] {
        for opts in [GpuOptions::default(), chunked(tiles(8))] {
            let mut pair = Pair::new(&p, s, opts);
            poison(&mut pair, &mut rng, len, s);
            // Gate slot: negative weights on even neurons, exact zeros on odd ones.
            let h = SparseVec::from_pairs(
                rand::seq::index::sample(&mut rng, len, s)
                    .into_iter()
                    .map(|i| {
                        let v = if (i / d) % 2 == 0 {
                            -rng.random_range(0.1f32..1.0)
                        } else {
                            0.0
                        };
                        (i as u32, v)
                    })
                    .collect(),
            );
            let w = random_sparse(&mut rng, len, s);
            pair.both(|b| b.load(Slot::BEST, &h));
            pair.both(|b| b.set_gates(GateSource::Slot(Slot::BEST)));
            // Later changes of the gate's source slot must not move the gates.
            pair.both(|b| b.load(Slot::BEST, &w));
            pair.both(|b| b.load(Slot::W, &w));
            let (fg, fc) = pair.both(|b| b.forward(Slot::W));
            assert_scalar("closed: forward", fg, fc);
            let ((gg, cg), (gc, cc)) = pair.both(|b| b.step_size(Slot::W, Slot::G));
            assert_eq!((gg, cg), (0.0, 0.0), "closed gates: gradient must vanish");
            assert_eq!((gc, cc), (0.0, 0.0));
            pair.both(|b| b.threshold(Slot::W, 0.3, s, Slot::V));
            let (g, c) = pair.both(|b| b.read(Slot::V));
            assert_eq!(g, c, "closed gates: c = w exactly, ties to the lower index");
            let (pg, pc) = pair.both(|b| b.predict(Slot::W));
            assert!(pg.iter().all(|&v| v == 0.0) && pc.iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn load_read_roundtrip_and_validation() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let p = Arc::new(dense_problem(&mut rng, GateMode::Convex, 20, 6, 4));
    let mut g = GpuBackend::new(ctx(), p.clone(), 7).unwrap();
    for s in [0usize, 1, 7] {
        let w = random_sparse(&mut rng, 24, s);
        g.load(Slot::TRIAL, &w).unwrap();
        assert_eq!(g.read(Slot::TRIAL).unwrap(), w);
    }
    assert!(
        g.load(Slot::W, &random_sparse(&mut rng, 24, 8)).is_err(),
        "more than s entries"
    );
    let bad = SparseVec {
        indices: vec![24],
        values: vec![1.0],
    };
    assert!(g.load(Slot::W, &bad).is_err(), "index beyond m·d");
    let bad = SparseVec {
        indices: vec![3],
        values: vec![f32::NAN],
    };
    assert!(g.load(Slot::W, &bad).is_err(), "non-finite");
    assert!(
        g.threshold(Slot::W, 1.0, 8, Slot::V).is_err(),
        "s beyond capacity"
    );
    assert!(g.set_batch(Some(&[0, 20])).is_err(), "sample out of range");
    let info = g.info();
    assert_eq!(info.kind, "gpu");
    let mem = g.memory();
    assert!(mem.peak_bytes >= mem.current_bytes && mem.current_bytes > 0);
    assert!(mem.tile_bytes > 0 && mem.tile_bytes < mem.current_bytes);
}

/// More dispatches than one submission carries (163 tiles of 8 neurons): the call is split
/// into several submissions and must still match.
#[test]
fn many_tiles_span_several_submissions() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let p = Arc::new(dense_problem(&mut rng, GateMode::Convex, 20, 3, 1300));
    let len = p.m * p.d;
    let mut swaps = 0;
    for &s in &[5usize, len] {
        let mut pair = Pair::new(&p, s, tiles(8));
        poison(&mut pair, &mut rng, len, s);
        let w = random_sparse(&mut rng, len, s);
        pair.both(|b| b.load(Slot::W, &w));
        let (fg, fc) = pair.both(|b| b.forward(Slot::W));
        assert_scalar("many tiles: forward", fg, fc);
        pair.both(|b| b.threshold(Slot::W, 0.05, s, Slot::V));
        let (g, c) = pair.both(|b| b.read(Slot::V));
        assert_topk(&format!("many tiles: s {s}"), &g, &c, &mut swaps);
    }
    assert_eq!(swaps, 0);
}

/// Relative bound of whole refinement batches: several steps of f32 rounding on the GPU
/// against f64 sums on the CPU.
const REFINE_REL: f64 = 1e-3;

/// Which refinement batch a test runs: `refine_exact`, or `refine_armijo` with the normalised
/// step at the start (`None`) or a given μ.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Exact,
    Armijo(Option<f32>),
}

impl Rule {
    fn run(
        self,
        b: &mut dyn Backend,
        (v, g, t): (Slot, Slot, Slot),
        f_v: f64,
        steps: usize,
    ) -> spinr::Result<Vec<RefineStep>> {
        match self {
            Rule::Exact => b.refine_exact(v, g, t, f_v, steps),
            Rule::Armijo(mu) => b.refine_armijo(v, g, t, f_v, mu, steps),
        }
    }

    /// The host's loop for the same batch, on any backend.
    fn host(
        self,
        b: &mut dyn Backend,
        (v, g, t): (Slot, Slot, Slot),
        f_v: f64,
        steps: usize,
    ) -> spinr::Result<Vec<RefineStep>> {
        match self {
            Rule::Exact => refine_exact_host(b, v, g, t, f_v, steps),
            Rule::Armijo(mu) => refine_armijo_host(b, (v, g, t), f_v, mu, steps),
        }
    }

    /// Whether step `k`'s μ is the normalised step (else it is the batch's one μ).
    fn normalised(self, k: usize) -> bool {
        match self {
            Rule::Exact => true,
            Rule::Armijo(mu) => k == 0 && mu.is_none(),
        }
    }
}

/// How two refinement batches from the same point compare.
#[derive(Debug, PartialEq)]
enum Batches {
    /// The same steps accepted, every record within the bound.
    Same,
    /// Equal up to a step that changed the loss by rounding only (the f32 floor): from there
    /// on gradients are rounding noise and decisions coin flips, so nothing more compares.
    ReachTheFloor,
}

#[track_caller]
fn compare_records(what: &str, a: &[RefineStep], b: &[RefineStep], f_v: f64, rel: f64) -> Batches {
    let near = |x: f64, y: f64| (x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-30;
    let mut f = f_v;
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        let fields = [
            ("f(trial)", x.f_t, y.f_t),
            ("‖g‖²", x.gn, y.gn),
            ("‖A g‖²", x.curv, y.curv),
            ("μ", x.mu as f64, y.mu as f64),
        ];
        let floor = (f - x.f_t).abs() <= 1e-5 * f && (f - y.f_t).abs() <= 1e-5 * f;
        for (name, p, q) in if floor { &fields[..1] } else { &fields[..] } {
            note(
                &format!("refinement record {name}"),
                (p - q).abs() / p.abs().max(q.abs()).max(1e-30),
            );
            assert!(
                near(*p, *q),
                "{what}: step {k} {name}: {p} vs {q}\n{a:?}\n{b:?}"
            );
        }
        if floor {
            return Batches::ReachTheFloor;
        }
        assert_eq!(
            x.accepted, y.accepted,
            "{what}: step {k} accepted by one side only, away from the f32 floor\n{a:?}\n{b:?}"
        );
        if x.accepted {
            f = x.f_t;
        }
    }
    assert_eq!(a.len(), b.len(), "{what}: batch lengths\n{a:?}\n{b:?}");
    Batches::Same
}

/// The device's records obey the host's formulas: μ from its own ‖g‖² and ‖A g‖² (to the
/// last bits: the host divides in f64), and each decision is the host's Armijo test on the
/// device's own losses, so a rejection is exactly where the host loop would have stopped.
/// An Armijo batch keeps one μ (the host's, or its first normalised step) and records
/// `‖A g‖² = 0` for the steps that do not compute it.
#[track_caller]
fn assert_records_follow_the_host_rules(what: &str, rule: Rule, recs: &[RefineStep], f_v: f64) {
    let mut f = f_v;
    for (k, r) in recs.iter().enumerate() {
        if rule.normalised(k) {
            let mu = (r.gn / (r.curv + 1e-8)) as f32;
            assert!(
                (r.mu as f64 - mu as f64).abs() <= 4.0 * f32::EPSILON as f64 * mu as f64,
                "{what}: step {k}: device μ {} vs host μ {mu} ({r:?})",
                r.mu
            );
        } else {
            let mu = match rule {
                Rule::Armijo(Some(mu)) => mu,
                _ => recs[0].mu,
            };
            assert_eq!((r.mu, r.curv), (mu, 0.0), "{what}: step {k}: the batch's μ");
        }
        assert_eq!(
            r.accepted,
            armijo_accepts(f, r.f_t, r.mu, r.gn),
            "{what}: step {k}: the device's decision from loss {f} ({r:?})"
        );
        assert!(
            r.accepted || k + 1 == recs.len(),
            "{what}: steps after a rejection"
        );
        if r.accepted {
            f = r.f_t;
        }
    }
}

/// The loss at the iterate after a batch: the last accepted trial's, or the start's.
fn final_loss(f_v: f64, recs: &[RefineStep]) -> f64 {
    recs.iter()
        .rev()
        .find(|r| r.accepted)
        .map_or(f_v, |r| r.f_t)
}

/// The GPU's state after a batch is the one its records describe, to the bit: after a stop,
/// the residual left current is the iterate's and `g` holds its gradient (step_size without a
/// forward gives the last record's norms), the rejected trial is reproduced from `v` and `g`;
/// the iterate's loss is the last accepted one.
#[track_caller]
fn assert_gpu_batch_state(
    what: &str,
    gpu: &mut GpuBackend,
    (v, g, t): (Slot, Slot, Slot),
    f_v: f64,
    recs: &[RefineStep],
) {
    if let Some(last) = recs.last().filter(|r| !r.accepted) {
        let (gn, curv) = gpu.step_size(v, g).unwrap();
        // An Armijo step that kept its μ recorded no ‖A g‖².
        let kept = last.curv == 0.0 && gn != 0.0;
        assert_eq!(
            (gn, if kept { 0.0 } else { curv }),
            (last.gn, last.curv),
            "{what}: step_size at the iterate after the stop"
        );
        if last.gn > 0.0 {
            assert_eq!(
                gpu.trial(v, g, t, last.mu, false).unwrap(),
                (last.gn, last.f_t),
                "{what}: the rejected trial again"
            );
        }
    }
    assert_eq!(
        gpu.forward(v).unwrap(),
        final_loss(f_v, recs),
        "{what}: forward at the iterate"
    );
}

/// Same indices; values within `rel` of the largest magnitude.
#[track_caller]
fn assert_vec_rel(what: &str, gpu: &SparseVec, cpu: &SparseVec, rel: f64) {
    assert_eq!(gpu.indices, cpu.indices, "{what}: supports differ");
    let scale = cpu.values.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    for (k, (&a, &b)) in gpu.values.iter().zip(&cpu.values).enumerate() {
        assert!(
            (a as f64 - b as f64).abs() <= rel * scale + 1e-30,
            "{what}: entry {k}: gpu {a} vs cpu {b} (scale {scale})"
        );
    }
}

/// The GPU's one-submission `refine_exact` against the CPU's (one fused pass per step), from a
/// random iterate: every case, both gate kinds, odd and even step counts (the iterate ends in
/// the other slot of the pair or not), both slot orders, a minibatch, poisoned device state
/// and stale scalars of an earlier batch.
#[test]
fn refine_exact_matches_the_cpu() {
    batches_match_the_cpu(false, 77);
}

/// The same for `refine_armijo` (the CPU runs the host loop): the normalised first step, or a
/// given μ (the normalised step at the start point, halved 0–2 times).
#[test]
fn refine_armijo_matches_the_cpu() {
    batches_match_the_cpu(true, 78);
}

/// `refine_fresh` (the forward pass in the refinement's submission) is a forward pass and then
/// the refinement, to the bit, on the GPU: the same starting loss, records, iterate and
/// residual as the two calls, one wait instead of two; with no steps, the forward alone. On
/// the CPU (the trait's default) it agrees with the GPU as the refinements do.
#[test]
fn refine_fresh_is_a_forward_then_the_refinement() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(79);
    let mut checked = 0;
    for (c, case) in cases(&mut rng).into_iter().enumerate() {
        let p = Arc::new(case.problem.clone());
        let len = p.m * p.d;
        let s = (len / 2).max(1);
        let rules = [
            StepRule::Exact,
            StepRule::Armijo(None),
            StepRule::Armijo(Some(1e-3)),
        ];
        let rule = rules[c % rules.len()];
        let steps = [3, 1, 0, 6][c % 4];
        let tag = format!("{} s {s}, {rule:?}, {steps} steps", case.name);
        let mut pair = Pair::new(&p, s, case.opts);
        poison(&mut pair, &mut rng, len, s);
        let h = random_sparse(&mut rng, len, s);
        pair.both(|b| b.load(Slot::BEST, &h));
        if p.gates != GateMode::Gaussian {
            pair.both(|b| b.set_gates(GateSource::Slot(Slot::BEST)));
        }
        if c % 2 == 1 {
            let batch: Vec<u32> = (0..p.n as u32).step_by(2).collect();
            pair.both(|b| b.set_batch(Some(&batch)));
        }
        let w = random_sparse(&mut rng, len, s);
        let q = (Slot::V, Slot::G, Slot::TRIAL);
        // The two calls, on the GPU.
        pair.gpu.load(Slot::V, &w).unwrap();
        let f_two = pair.gpu.forward(Slot::V).unwrap();
        let rule_of = |r: StepRule| match r {
            StepRule::Exact => Rule::Exact,
            StepRule::Armijo(mu) => Rule::Armijo(mu),
        };
        let recs_two = rule_of(rule).run(&mut pair.gpu, q, f_two, steps).unwrap();
        let v_two = pair.gpu.read(Slot::V).unwrap();
        let loss_two = pair.gpu.forward(Slot::V).unwrap();
        // The one call, from the same state (junk in the trial slot again).
        pair.gpu.load(Slot::TRIAL, &junk(&mut rng, len, s)).unwrap();
        pair.gpu.load(Slot::V, &w).unwrap();
        let trips = pair.gpu.round_trips();
        let (f_one, recs_one) = pair.gpu.refine_fresh(q.0, q.1, q.2, rule, steps).unwrap();
        assert_eq!(pair.gpu.round_trips(), trips + 1, "{tag}: waits");
        assert_eq!(
            (f_one, &recs_one),
            (f_two, &recs_two),
            "{tag}: loss and records"
        );
        assert_eq!(pair.gpu.read(Slot::V).unwrap(), v_two, "{tag}: iterate");
        assert_eq!(
            pair.gpu.forward(Slot::V).unwrap(),
            loss_two,
            "{tag}: residual"
        );
        // The CPU's default, against the GPU.
        pair.cpu.load(Slot::V, &w).unwrap();
        let (f_cpu, recs_cpu) = pair.cpu.refine_fresh(q.0, q.1, q.2, rule, steps).unwrap();
        assert_scalar(&format!("{tag}: start loss"), f_one, f_cpu);
        compare_records(&tag, &recs_one, &recs_cpu, f_cpu, REFINE_REL);
        assert!(recs_one.len() <= steps, "{tag}: at most {steps} records");
        checked += 1;
    }
    assert!(checked >= 6, "too few cases: {checked}");
}

fn batches_match_the_cpu(armijo: bool, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut variant = 0usize;
    let (mut same, mut floor, mut stops) = (0, 0, 0);
    for case in cases(&mut rng) {
        let p = Arc::new(case.problem.clone());
        let len = p.m * p.d;
        for s in [3usize.min(len), (len / 2).max(1)] {
            let gate_kinds: &[bool] = if p.gates == GateMode::Gaussian {
                &[false]
            } else {
                &[false, true]
            };
            for &weight_gates in gate_kinds {
                variant += 1;
                let steps = 4 + variant % 2;
                let (v, t) = if variant % 3 == 0 {
                    (Slot::TRIAL, Slot::V)
                } else {
                    (Slot::V, Slot::TRIAL)
                };
                let batched = variant % 4 == 1;
                let mut tag = format!(
                    "{} s {s} {}{}, {steps} steps, v {:?}",
                    case.name,
                    if weight_gates {
                        "weight gates"
                    } else {
                        "random gates"
                    },
                    if batched { ", batch" } else { "" },
                    v
                );
                let mut pair = Pair::new(&p, s, case.opts);
                poison(&mut pair, &mut rng, len, s);
                // Stale records, stop word and loss of an earlier batch on junk.
                let stale = if armijo {
                    Rule::Armijo(Some(0.37))
                } else {
                    Rule::Exact
                };
                stale
                    .run(&mut pair.gpu, (Slot::W, Slot::G, Slot::TRIAL), 0.0, 3)
                    .unwrap();
                let h = random_sparse(&mut rng, len, s);
                pair.both(|b| b.load(Slot::BEST, &h));
                let gates = if weight_gates {
                    GateSource::Slot(Slot::BEST)
                } else {
                    GateSource::Random
                };
                pair.both(|b| b.set_gates(gates));
                if batched {
                    let nb = (p.n / 3).max(1) + 1;
                    let batch: Vec<u32> = rand::seq::index::sample(&mut rng, p.n, nb.min(p.n))
                        .into_iter()
                        .map(|i| i as u32)
                        .collect();
                    pair.both(|b| b.set_batch(Some(&batch)));
                }
                let w = random_sparse(&mut rng, len, s);
                pair.both(|b| b.load(v, &w));
                let (fg, fc) = pair.both(|b| b.forward(v));
                assert_scalar(&format!("{tag}: start loss"), fg, fc);
                let rule = if !armijo {
                    Rule::Exact
                } else if variant % 2 == 0 {
                    Rule::Armijo(None)
                } else {
                    // The same μ on both sides: the CPU's normalised step, halved.
                    let (gn, curv) = pair.cpu.step_size(v, Slot::G).unwrap();
                    Rule::Armijo(Some(
                        normalised_step(gn, curv) * 0.5f32.powi(variant as i32 % 3),
                    ))
                };
                tag += &format!(", {rule:?}");
                let q = (v, Slot::G, t);
                let rg = rule.run(&mut pair.gpu, q, fg, steps).unwrap();
                let rc = rule.run(&mut pair.cpu, q, fc, steps).unwrap();
                assert_records_follow_the_host_rules(&tag, rule, &rg, fg);
                if rg.last().is_some_and(|r| !r.accepted) {
                    stops += 1;
                }
                match compare_records(&tag, &rg, &rc, fc, REFINE_REL) {
                    Batches::Same => {
                        same += 1;
                        let (a, b) = pair.both(|b| b.read(v));
                        assert_vec_rel(&format!("{tag}: iterate"), &a, &b, REFINE_REL);
                        let (a, b) = pair.both(|b| b.read(Slot::G));
                        assert_vec_rel(&format!("{tag}: gradient slot"), &a, &b, REFINE_REL);
                        // The residual left current is the iterate's on both.
                        // The gradient has shrunk over the batch and carries the f32 rounding
                        // of the larger terms it cancelled: compare on the batch's first scale.
                        let ((gg, cg), (gc, cc)) = pair.both(|b| b.step_size(v, Slot::G));
                        let (g0, c0) = rc.first().map_or((0.0, 0.0), |r| (r.gn, r.curv));
                        assert!(
                            (gg - gc).abs() <= REFINE_REL * gg.max(gc).max(g0)
                                && (cg - cc).abs() <= REFINE_REL * cg.max(cc).max(c0),
                            "{tag}: step_size after the batch: gpu ({gg}, {cg}) vs cpu ({gc}, {cc})"
                        );
                        let (lg, lc) = pair.both(|b| b.forward(v));
                        // The CPU carries its residual by recurrence (one pass per step): a
                        // fresh product agrees to f32 rounding on the batch's first scale.
                        let want = final_loss(fc, &rc);
                        assert!(
                            (lc - want).abs() <= REFINE_REL * fc.max(want),
                            "{tag}: cpu loss at the iterate {lc} vs {want}"
                        );
                        assert_eq!(lg, final_loss(fg, &rg), "{tag}: gpu loss at the iterate");
                    }
                    Batches::ReachTheFloor => {
                        eprintln!("{tag}: reaches the f32 floor");
                        floor += 1;
                        assert_gpu_batch_state(&tag, &mut pair.gpu, (v, Slot::G, t), fg, &rg);
                    }
                }
            }
        }
    }
    eprintln!("{same} batches as on the CPU, {floor} reaching the f32 floor, {stops} stopped");
    // Tiny supports (s = 3) converge in a step or two; the larger ones must compare whole.
    assert!(same >= 16, "too few batches compare whole: {same}");
    for (k, e) in WORST.lock().unwrap().iter() {
        eprintln!("  worst relative error  {e:.2e}  {k}");
    }
}

/// A consistent least-squares problem run to the f32 floor, so that a step is rejected after
/// more steps than one submission holds: the batches (exact, and Armijo with a given μ) agree
/// with the host loop on the same device until the floor, stop by the host's rule, and leave
/// the state their records describe.
#[test]
fn refine_stops_at_the_floor_like_the_host_loop() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for (n, d, m, s, gates) in [
        (60usize, 8usize, 3usize, 6usize, GateMode::Convex),
        (45, 12, 1, 9, GateMode::Gaussian),
        (90, 7, 5, 11, GateMode::Convex),
    ] {
        // y = A w* on w*'s support, then a refinement from a perturbed w* on that support.
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let seed: u64 = rng.random();
        let p0 = Arc::new(
            Problem::new(d, m, Features::Dense(x.clone()), vec![0.0; n], gates, seed).unwrap(),
        );
        let w_star = random_sparse(&mut rng, m * d, s);
        let mut cpu = CpuBackend::new(p0, s, 0).unwrap();
        cpu.load(Slot::W, &w_star).unwrap();
        let y = cpu.predict(Slot::W).unwrap();
        let p = Arc::new(Problem::new(d, m, Features::Dense(x), y, gates, seed).unwrap());
        let v0 = SparseVec {
            indices: w_star.indices.clone(),
            values: w_star
                .values
                .iter()
                .map(|&a| a + rng.random_range(-0.5f32..0.5))
                .collect(),
        };
        for (opts, rule) in [
            (GpuOptions::default(), Rule::Exact),
            (chunked(GpuOptions::default()), Rule::Exact),
            (GpuOptions::default(), Rule::Armijo(Some(0.5))),
            (chunked(GpuOptions::default()), Rule::Armijo(Some(0.3))),
        ] {
            let mut dev = GpuBackend::with_options(ctx(), p.clone(), s, opts).unwrap();
            let mut host = GpuBackend::with_options(ctx(), p.clone(), s, opts).unwrap();
            dev.load(Slot::V, &v0).unwrap();
            host.load(Slot::V, &v0).unwrap();
            let f_v = dev.forward(Slot::V).unwrap();
            assert_eq!(f_v, host.forward(Slot::V).unwrap());
            // Armijo: a fraction of the normalised step at the start (the whole one reaches
            // the floor within one submission here).
            let rule = match rule {
                Rule::Armijo(Some(f)) => {
                    let (gn, curv) = dev.step_size(Slot::V, Slot::G).unwrap();
                    Rule::Armijo(Some(f * normalised_step(gn, curv)))
                }
                r => r,
            };
            let tag = format!(
                "n {n} d {d} m {m} s {s} {gates:?}, apply threads {:?}, {rule:?}",
                opts.apply_threads
            );
            let steps = 1000;
            let q = (Slot::V, Slot::G, Slot::TRIAL);
            let rd = rule.run(&mut dev, q, f_v, steps).unwrap();
            let rh = rule.host(&mut host, q, f_v, steps).unwrap();
            let last = rd.last().unwrap();
            assert!(
                rd.len() > 32 && rd.len() < steps && !last.accepted && last.gn > 0.0,
                "{tag}: expected a rejection after more than one submission: {} steps, last {last:?}",
                rd.len()
            );
            assert_records_follow_the_host_rules(&tag, rule, &rd, f_v);
            let how = compare_records(&tag, &rd, &rh, f_v, 1e-4);
            eprintln!(
                "{tag}: {} steps on the device, {} in the host loop: {how:?}",
                rd.len(),
                rh.len()
            );
            assert_gpu_batch_state(&tag, &mut dev, (Slot::V, Slot::G, Slot::TRIAL), f_v, &rd);
            let vd = dev.read(Slot::V).unwrap();
            assert_vec_rel(&format!("{tag}: to w*"), &vd, &w_star, 1e-4);
            assert_vec_rel(
                &format!("{tag}: iterate"),
                &vd,
                &host.read(Slot::V).unwrap(),
                1e-4,
            );
        }
    }
}

/// No steps; a gradient that vanishes (gates closed everywhere); slots that alias: for both
/// kinds of batch.
#[test]
fn refine_edge_cases() {
    for rule in [Rule::Exact, Rule::Armijo(None), Rule::Armijo(Some(0.25))] {
        refine_edge_cases_of(rule);
    }
}

fn refine_edge_cases_of(rule: Rule) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let (n, d, m) = (50, 7, 6);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let p = Arc::new(Problem::new(d, m, Features::Dense(x), y, GateMode::Sequential, 3).unwrap());
    let len = m * d;
    let s = 9;
    let mut pair = Pair::new(&p, s, GpuOptions::default());
    poison(&mut pair, &mut rng, len, s);
    let w = random_sparse(&mut rng, len, s);
    pair.both(|b| b.load(Slot::V, &w));
    let (fg, fc) = pair.both(|b| b.forward(Slot::V));
    let q = (Slot::V, Slot::G, Slot::TRIAL);

    let (rg, rc) = pair.both(|b| rule.run(b, q, fg, 0));
    assert!(rg.is_empty() && rc.is_empty(), "{rule:?}");
    let (a, b) = pair.both(|b| b.read(Slot::V));
    assert_eq!(
        (&a, &b),
        (&w, &w),
        "{rule:?}: no steps: the iterate is untouched"
    );
    let (lg, lc) = pair.both(|b| b.forward(Slot::V));
    assert_eq!((lg, lc), (fg, fc));

    for bad in [
        (Slot::V, Slot::V, Slot::TRIAL),
        (Slot::V, Slot::G, Slot::V),
        (Slot::V, Slot::G, Slot::G),
    ] {
        assert!(rule.run(&mut pair.gpu, bad, fg, 2).is_err(), "{rule:?}");
        assert!(rule.run(&mut pair.cpu, bad, fc, 2).is_err(), "{rule:?}");
    }

    // Negative gate weights on non-negative features: every gate closed, g = 0 exactly.
    let h = SparseVec::from_pairs(
        rand::seq::index::sample(&mut rng, len, s)
            .into_iter()
            .map(|i| (i as u32, -rng.random_range(0.1f32..1.0)))
            .collect(),
    );
    pair.both(|b| b.load(Slot::BEST, &h));
    pair.both(|b| b.set_gates(GateSource::Slot(Slot::BEST)));
    let (fg, fc) = pair.both(|b| b.forward(Slot::V));
    let rg = rule.run(&mut pair.gpu, q, fg, 5).unwrap();
    let rc = rule.run(&mut pair.cpu, q, fc, 5).unwrap();
    assert_eq!(rg.len(), 1, "{rule:?}: {rg:?}");
    assert_eq!(rc.len(), 1, "{rule:?}: {rc:?}");
    let mu = match rule {
        Rule::Armijo(Some(mu)) => mu,
        _ => 0.0,
    };
    for r in [&rg[0], &rc[0]] {
        assert_eq!(
            (r.gn, r.curv, r.mu, r.accepted),
            (0.0, 0.0, mu, false),
            "{rule:?}: {r:?}"
        );
    }
    assert_scalar("closed gates: f(trial) = f(v)", rg[0].f_t, rc[0].f_t);
    assert_gpu_batch_state("closed gates", &mut pair.gpu, q, fg, &rg);
    let (a, b) = pair.both(|b| b.read(Slot::V));
    assert_eq!(
        (&a, &b),
        (&w, &w),
        "{rule:?}: a vanishing gradient leaves the iterate"
    );
    let (lg, lc) = pair.both(|b| b.forward(Slot::V));
    assert_eq!((lg, lc), (fg, fc));
}
