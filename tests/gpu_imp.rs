//! IMP's dense network on the GPU (`shaders/mlp.wgsl`) against the CPU one (the oracle,
//! itself tested against an f64 reference), through the `DenseMlp` trait: awkward sizes (n, d,
//! m not multiples of the 64-wide tiles, m = 1, one sample), a mask with zero rows, C = 1 (MSE)
//! and C = 10 (cross-entropy), full batch and minibatches, resident and streamed features,
//! dense and grid features, one and several blocks. Every kernel's outputs are poisoned with
//! NaN before it runs.
//!
//! Bounds: scalars within `REL` relative; vectors within `REL` of their largest magnitude (both
//! backends accumulate in f32, in different orders).
//!
//! These tests need a GPU adapter; without one they fail (never skip) and say how to get one.

use rand::{Rng, SeedableRng};
use spinr::imp::adam::AdamStep;
use spinr::imp::cpu::CpuMlp;
use spinr::imp::gpu::GpuMlp;
use spinr::imp::{self, DenseMlp, ImpDevice, ImpOptions, MlpData, Targets};
use spinr::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use std::ops::ControlFlow;

mod common;

const REL: f64 = 1e-4;

fn random(rng: &mut impl Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

#[track_caller]
fn assert_scalar(what: &str, gpu: f64, cpu: f64) {
    assert!(
        (gpu - cpu).abs() <= REL * gpu.abs().max(cpu.abs()) + 1e-12,
        "{what}: gpu {gpu} vs cpu {cpu}"
    );
}

#[track_caller]
fn assert_dense(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    for (i, (&a, &b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (a as f64 - b as f64).abs() <= REL * scale + 1e-12,
            "{what}[{i}]: gpu {a} vs cpu {b} (scale {scale})"
        );
    }
}

#[derive(Clone, Copy)]
struct Case {
    n: usize,
    d: usize,
    m: usize,
    c: usize,
    labels: bool,
    grid: bool,
    /// Feature budget (0: the GPU streams the features block by block).
    budget: usize,
    /// Samples per block (None: the default, one block).
    block: Option<usize>,
}

fn features(rng: &mut impl Rng, case: &Case) -> Features {
    if case.grid {
        // An n = rows × cols grid of Fourier features (d even).
        let rows = 7;
        let spec = FourierSpec {
            d: case.d,
            seed: 5,
            sigma: vec![2.0, 3.0],
            coords: vec![AxisCoords::Unit, AxisCoords::Unit],
            constant_feature: true,
            given: Vec::new(),
        };
        Features::Grid(spec.grid(&[rows, case.n / rows]).unwrap())
    } else {
        Features::Dense(random(rng, case.n * case.d, 1.0))
    }
}

fn compare(case: Case, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Case { n, d, m, c, .. } = case;
    let x = features(&mut rng, &case);
    let t = if case.labels {
        Targets::Labels((0..n).map(|_| rng.random_range(0..c as u32)).collect())
    } else {
        Targets::Values(random(&mut rng, n * c, 1.0))
    };
    let data = MlpData {
        features: &x,
        n,
        d,
        targets: &t,
    };
    let mut cpu = CpuMlp::new(data, m, c, case.budget).unwrap();
    let mut gpu = GpuMlp::new(common::gpu_ctx(), data, m, c, case.budget).unwrap();
    assert_eq!(gpu.resident(), case.budget > 0, "feature placement");
    if let Some(b) = case.block {
        cpu.set_block(b);
        gpu.set_block(b);
        assert_eq!(gpu.block(), b);
    }
    gpu.set_poison(true);
    let tag = format!(
        "n={n} d={d} m={m} c={c} grid={} budget={} block={:?}",
        case.grid, case.budget, case.block
    );

    let mut u = random(&mut rng, m * d, 0.6);
    let mut v = random(&mut rng, m * c, 0.6);
    // A pruned neuron (all of its weights) and a few scattered pruned weights.
    let mut mu = vec![true; m * d];
    let mut mv = vec![true; m * c];
    if m > 1 {
        mu[d..2 * d].fill(false);
        mv[c..2 * c].fill(false);
    }
    for i in (0..m * d).step_by(7) {
        mu[i] = false;
    }
    for (w, &k) in u.iter_mut().zip(&mu) {
        *w *= k as u8 as f32;
    }
    for (w, &k) in v.iter_mut().zip(&mv) {
        *w *= k as u8 as f32;
    }
    for net in [&mut cpu as &mut dyn DenseMlp, &mut gpu] {
        net.set_mask(&mu, &mv).unwrap();
        net.set_weights(&u, &v).unwrap();
        net.reset_adam().unwrap();
    }
    let batch: Vec<u32> = (0..n as u32).rev().step_by(2).collect();
    for (pass, b) in [(0, None), (1, Some(batch.as_slice())), (2, None)] {
        let what = format!("{tag} pass {pass}");
        for net in [&mut cpu as &mut dyn DenseMlp, &mut gpu] {
            net.forward_backward(b).unwrap();
        }
        assert_scalar(
            &format!("{what}: loss"),
            gpu.last_loss().unwrap(),
            cpu.last_loss().unwrap(),
        );
        let (gu, gv) = gpu.gradients().unwrap();
        let (cu, cv) = cpu.gradients().unwrap();
        assert_dense(&format!("{what}: gradient of U"), &gu, &cu);
        assert_dense(&format!("{what}: gradient of V"), &gv, &cv);
        let step = AdamStep::new(pass + 1, 1e-2);
        for net in [&mut cpu as &mut dyn DenseMlp, &mut gpu] {
            net.adam_step(&step).unwrap();
        }
        let (wu, wv) = gpu.weights().unwrap();
        let (cu, cv) = cpu.weights().unwrap();
        assert_dense(&format!("{what}: U after Adam"), &wu, &cu);
        assert_dense(&format!("{what}: V after Adam"), &wv, &cv);
        // Pruned weights stay exactly zero.
        assert!(
            wu.iter().zip(&mu).all(|(&w, &k)| k || w == 0.0),
            "{what}: pruned U"
        );
        assert!(
            wv.iter().zip(&mv).all(|(&w, &k)| k || w == 0.0),
            "{what}: pruned V"
        );
        // Continue from identical weights so that errors do not compound.
        gpu.set_weights(&cu, &cv).unwrap();
        assert_scalar(
            &format!("{what}: forward-only loss"),
            gpu.loss(b).unwrap(),
            cpu.loss(b).unwrap(),
        );
        assert_dense(
            &format!("{what}: predictions"),
            &gpu.predict(b).unwrap(),
            &cpu.predict(b).unwrap(),
        );
    }
    assert!(gpu.memory().peak_bytes as usize >= 4 * 5 * (m * d + m * c));
}

#[test]
fn gpu_matches_cpu_on_awkward_sizes() {
    let base = Case {
        n: 37,
        d: 13,
        m: 7,
        c: 1,
        labels: false,
        grid: false,
        budget: 1 << 30,
        block: None,
    };
    let cases = [
        Case { ..base },
        Case {
            n: 130,
            d: 70,
            m: 65,
            c: 10,
            labels: true,
            ..base
        },
        Case {
            n: 200,
            d: 129,
            m: 1,
            ..base
        },
        Case {
            n: 1,
            d: 5,
            m: 3,
            ..base
        },
        Case {
            n: 67,
            d: 33,
            m: 130,
            c: 3,
            ..base
        },
        // Several blocks (the gradient accumulates), resident and streamed.
        Case {
            n: 150,
            d: 20,
            m: 9,
            block: Some(64),
            ..base
        },
        Case {
            n: 150,
            d: 20,
            m: 9,
            c: 10,
            labels: true,
            budget: 0,
            block: Some(50),
            ..base
        },
        // Fourier features of a 7×11 grid, on the device and generated per block.
        Case {
            n: 77,
            d: 24,
            m: 17,
            grid: true,
            ..base
        },
        Case {
            n: 77,
            d: 24,
            m: 17,
            grid: true,
            budget: 0,
            block: Some(30),
            ..base
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        compare(case, 100 + i as u64);
    }
}

/// One IMP run on the GPU follows the CPU's: same round counts, close losses.
#[test]
fn imp_rounds_agree_across_backends() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (n, d) = (90, 12);
    let x = random(&mut rng, n * d, 1.0);
    let y: Vec<f32> = (0..n)
        .map(|i| x[i * d].max(0.0) - 0.5 * x[i * d + 1].max(0.0))
        .collect();
    let p = Problem::new(d, 1, Features::Dense(x), y, GateMode::Convex, 0).unwrap();
    let opts = ImpOptions {
        neurons: 6,
        nonzeros: 40,
        epochs: 5,
        lr: 1e-2,
        seed: 2,
        ..Default::default()
    };
    let run = |device: ImpDevice| {
        let mut rounds = Vec::new();
        let r = imp::fit(&p, &opts, &device, |r| {
            rounds.push((r.nonzeros, r.loss));
            ControlFlow::Continue(())
        })
        .unwrap();
        (rounds, r)
    };
    let (cpu, rc) = run(ImpDevice::Cpu);
    let (gpu, rg) = run(ImpDevice::Gpu(common::gpu_ctx()));
    assert_eq!(rg.backend.kind, "gpu");
    assert_eq!(
        cpu.iter().map(|r| r.0).collect::<Vec<_>>(),
        gpu.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for ((_, a), (_, b)) in cpu.iter().zip(&gpu) {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1e-6),
            "round losses {a} vs {b}"
        );
    }
    assert!(rc.nonzeros <= 40 && rg.nonzeros <= 40);
}

/// An image model with an output layer renders the same on the GPU as on the CPU, also when
/// the rendered grid is larger than the fitted one.
#[test]
fn imp_image_models_render_alike_on_both_backends() {
    use spinr::backend::BackendChoice;
    use spinr::inr::{self, Coords, InrSpec};
    let spec = InrSpec {
        neurons: 70,
        features: 36,
        sigma: vec![3.0, 2.0],
        coords: Coords::Unit,
        feature_seed: 9,
        gate_seed: inr::gate_seed(9),
        gates: GateMode::Sequential,
        constant_feature: true,
        image_frequencies: Vec::new(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let u = random(&mut rng, 70 * 36, 0.3);
    let v = random(&mut rng, 70, 0.5);
    let net = imp::ImpModel::from_dense(36, 70, 1, &u, &v);
    let model = spinr::inr::ImageModel::from_imp(&net, &spec, 9, 11, 1).unwrap();
    for (h, w) in [(9, 11), (40, 33)] {
        let cpu = model.render(BackendChoice::Cpu, None, h, w).unwrap();
        let gpu = model.render(BackendChoice::Gpu, None, h, w).unwrap();
        assert!(cpu.data.iter().any(|&x| x > 0.0 && x < 1.0));
        assert_dense(&format!("render {h}×{w}"), &gpu.data, &cpu.data);
    }
}
