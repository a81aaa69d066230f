//! Whole fits on the CPU backend: exact planted recovery and determinism.

use spinr::backend::cpu::CpuBackend;
use spinr::iht::IhtConfig;
use spinr::plant::{self, PlantSpec};
use spinr::problem::GateMode;

fn spec(gates: GateMode, d: usize, m: usize, s: usize, n: usize, seed: u64) -> PlantSpec {
    PlantSpec {
        gates,
        inputs: d,
        neurons: m,
        nonzeros: s,
        samples: n,
        seed,
    }
}

fn fit(spec: &PlantSpec, iters: usize) -> (plant::PlantReport, spinr::sparse::SparseVec) {
    let planted = spec.build().unwrap();
    let mut be = CpuBackend::new(planted.train.clone(), spec.nonzeros, 0).unwrap();
    let cfg = IhtConfig::new(spec.nonzeros, iters, spec.gates);
    let fit = plant::run(&mut be, &planted, &cfg, |_| {}).unwrap();
    (
        plant::score_iht(spec, &planted, &fit, "cpu", "test", 0.0).unwrap(),
        fit.w,
    )
}

#[test]
fn convex_planted_networks_are_recovered_exactly() {
    for seed in 0..4 {
        let (r, _) = fit(&spec(GateMode::Convex, 60, 20, 40, 900, seed), 100);
        assert!(r.recovered, "seed {seed}: {r:?}");
        assert!(r.relative_error < 1e-5, "seed {seed}: {r:?}");
        assert!(r.test_psnr > 80.0, "seed {seed}: {r:?}");
    }
}

#[test]
fn gaussian_sensing_recovers() {
    let (r, _) = fit(&spec(GateMode::Gaussian, 50, 4, 20, 150, 1), 100);
    assert!(r.recovered, "{r:?}");
}

#[test]
fn too_few_samples_do_not_recover() {
    // A test that can fail the other way: with n far below s·log(md/s) recovery must fail.
    let (r, _) = fit(&spec(GateMode::Convex, 60, 20, 40, 60, 0), 30);
    assert!(!r.recovered, "{r:?}");
}

#[test]
fn sequential_planted_fit_generalises() {
    let (r, _) = fit(&spec(GateMode::Sequential, 50, 10, 10, 2000, 0), 15);
    assert!(r.test_psnr > 22.0, "{r:?}");
    assert!(r.train_psnr > r.test_psnr - 3.0, "{r:?}");
}

#[test]
fn fits_are_deterministic() {
    let sp = spec(GateMode::Sequential, 30, 8, 12, 700, 3);
    let (a, wa) = fit(&sp, 6);
    let (b, wb) = fit(&sp, 6);
    assert_eq!(wa, wb);
    assert_eq!(a.train_psnr, b.train_psnr);
}

/// Over-selection (`IhtConfig::candidates`): twice `s` candidates, refined, pruned back to `s`
/// and refined again, still recovers a convex planted network exactly, holds exactly `s`
/// nonzeros, and changes the path (it is not silently off).
#[test]
fn over_selecting_steps_recover_planted_networks_with_s_nonzeros() {
    for seed in 0..4 {
        let sp = spec(GateMode::Convex, 60, 20, 40, 900, seed);
        let planted = sp.build().unwrap();
        let mut cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
        cfg.candidates = 2.0;
        let cap = cfg.pool(planted.train.signal_len());
        assert_eq!(cap, 80);
        let mut be = CpuBackend::new(planted.train.clone(), cap, 0).unwrap();
        let res = plant::run(&mut be, &planted, &cfg, |_| {}).unwrap();
        let r = plant::score_iht(&sp, &planted, &res, "cpu", "test", 0.0).unwrap();
        assert!(r.recovered, "seed {seed}: {r:?}");
        assert!(r.relative_error < 1e-5, "seed {seed}: {r:?}");
        assert_eq!(res.w.len(), sp.nonzeros, "seed {seed}");
        let (_, plain) = fit(&sp, 1);
        let mut one = cfg.clone();
        one.iters = 1;
        let mut be = CpuBackend::new(planted.train.clone(), cap, 0).unwrap();
        let first = plant::run(&mut be, &planted, &one, |_| {}).unwrap();
        // One epoch is one step, and the first step picks exactly `s` either way: the second
        // is the first to over-select, so the paths part there.
        assert_eq!(first.w, plain, "seed {seed}");
    }
    // A pool beyond m·d is clamped to it.
    let mut cfg = IhtConfig::new(500, 1, GateMode::Convex);
    cfg.candidates = 3.0;
    assert_eq!(cfg.pool(1200), 1200);
    assert_eq!(cfg.pool(100_000), 1500);
    cfg.candidates = 1.0;
    assert_eq!(cfg.pool(100_000), 500);
}

/// Two epochs with and without over-selection part ways at the second step.
#[test]
fn over_selection_changes_the_second_step() {
    let sp = spec(GateMode::Convex, 60, 20, 40, 900, 0);
    let planted = sp.build().unwrap();
    let mut cfg = IhtConfig::new(sp.nonzeros, 2, sp.gates);
    cfg.candidates = 2.0;
    let mut be = CpuBackend::new(planted.train.clone(), 80, 0).unwrap();
    let over = plant::run(&mut be, &planted, &cfg, |_| {}).unwrap();
    let (_, plain) = fit(&sp, 2);
    assert_eq!(over.w.len(), 40);
    assert_ne!(over.w, plain);
}

/// A growing support (`IhtConfig::grow_from`): the first epochs keep a share of `s`, the
/// rest all of it. It still recovers a convex planted network exactly with `s` nonzeros, and
/// the first epoch really keeps only its share (the growth is not silently off).
#[test]
fn a_growing_support_recovers_planted_networks_with_s_nonzeros() {
    for seed in 0..4 {
        let sp = spec(GateMode::Convex, 60, 20, 40, 900, seed);
        let planted = sp.build().unwrap();
        let mut cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
        cfg.grow_from = 0.5;
        let mut be = CpuBackend::new(planted.train.clone(), sp.nonzeros, 0).unwrap();
        let res = plant::run(&mut be, &planted, &cfg, |_| {}).unwrap();
        let r = plant::score_iht(&sp, &planted, &res, "cpu", "test", 0.0).unwrap();
        assert!(r.recovered, "seed {seed}: {r:?}");
        assert!(r.relative_error < 1e-5, "seed {seed}: {r:?}");
        assert_eq!(res.w.len(), sp.nonzeros, "seed {seed}");
    }
    // Two epochs of 100: the first keeps 20 nonzeros. Stopped after it (the observer
    // breaks), the fit holds exactly 20.
    let sp = spec(GateMode::Convex, 60, 20, 40, 900, 0);
    let planted = sp.build().unwrap();
    let mut cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
    cfg.grow_from = 0.5;
    let mut be = CpuBackend::new(planted.train.clone(), sp.nonzeros, 0).unwrap();
    let res = spinr::iht::fit(&mut be, planted.train.n, &cfg, |_| {
        std::ops::ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!((res.iterations, res.w.len()), (1, 20));
}
