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
