//! Whole fits on the GPU against the CPU: the same planted networks, the same IHT driver.
//! Needs a GPU adapter (fails, never skips, without one: `apt-get install mesa-vulkan-drivers`).

use spinr::backend::cpu::CpuBackend;
use spinr::backend::gpu::{GpuBackend, GpuContext, GpuOptions, SupportOrder};
use spinr::backend::Backend;
use spinr::iht::IhtConfig;
use spinr::plant::{self, PlantReport, PlantSpec, Planted};
use spinr::problem::GateMode;
use spinr::sparse::SparseVec;
use std::sync::Arc;

mod common;
use std::time::Instant;

fn ctx() -> Arc<GpuContext> {
    common::gpu_ctx()
}

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

fn fit_with(
    backend: &mut dyn Backend,
    spec: &PlantSpec,
    planted: &Planted,
    cfg: &IhtConfig,
    name: &str,
) -> (PlantReport, SparseVec) {
    let t = Instant::now();
    let fit = plant::run(backend, planted, cfg, |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let r = plant::score_iht(spec, planted, &fit, name, "test", secs).unwrap();
    eprintln!(
        "{name}: recovered {} rel err {:.3e} support errors {} train {:.1} dB test {:.1} dB, {} epochs, {:.2} s",
        r.recovered, r.relative_error, r.support_errors, r.train_psnr, r.test_psnr, r.iterations, secs
    );
    (r, fit.w)
}

fn both(
    spec: &PlantSpec,
    cfg: &IhtConfig,
    opts: GpuOptions,
) -> ((PlantReport, SparseVec), (PlantReport, SparseVec)) {
    let planted = spec.build().unwrap();
    let cap = cfg.pool(planted.train.signal_len());
    let mut gpu = GpuBackend::with_options(ctx(), planted.train.clone(), cap, opts).unwrap();
    let mut cpu = CpuBackend::new(planted.train.clone(), cap, 0).unwrap();
    let g = fit_with(&mut gpu, spec, &planted, cfg, "gpu");
    let c = fit_with(&mut cpu, spec, &planted, cfg, "cpu");
    (g, c)
}

fn nonzero_support(v: &SparseVec) -> Vec<u32> {
    v.indices
        .iter()
        .zip(&v.values)
        .filter(|(_, &x)| x != 0.0)
        .map(|(&i, _)| i)
        .collect()
}

/// The brief's reference fit: d 100, m 50, s 100, n 2000, convex gates.
#[test]
fn convex_planted_fit_matches_the_cpu() {
    for seed in [0u64, 1] {
        let sp = spec(GateMode::Convex, 100, 50, 100, 2000, seed);
        let cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
        let ((rg, wg), (rc, wc)) = both(&sp, &cfg, GpuOptions::default());
        assert!(rc.recovered, "cpu seed {seed}: {rc:?}");
        assert!(rg.recovered, "gpu seed {seed}: {rg:?}");
        assert!(rg.relative_error < 1e-4 && rc.relative_error < 1e-4);
        assert_eq!(nonzero_support(&wg), nonzero_support(&wc), "seed {seed}");
        let between = (wg.dist2(&wc) / wc.norm2()).sqrt();
        eprintln!("seed {seed}: ‖w_gpu − w_cpu‖ / ‖w_cpu‖ = {between:.3e}");
        assert!(
            between < 1e-4,
            "seed {seed}: gpu vs cpu relative distance {between}"
        );
    }
}

/// Minibatch updates (the paper's stochastic mode) on both backends.
#[test]
fn minibatch_planted_fit_matches_the_cpu() {
    let sp = spec(GateMode::Convex, 40, 12, 30, 700, 4);
    let mut cfg = IhtConfig::new(sp.nonzeros, 60, sp.gates);
    cfg.batch_size = Some(350);
    let ((rg, wg), (rc, wc)) = both(
        &sp,
        &cfg,
        GpuOptions {
            // The chunked support apply of hardware GPUs, in a whole fit.
            apply_threads: Some(1 << 16),
            ..Default::default()
        },
    );
    assert!(rc.recovered && rg.recovered, "gpu {rg:?}\ncpu {rc:?}");
    assert_eq!(nonzero_support(&wg), nonzero_support(&wc));
}

/// Minibatch updates with momentum (spinr's default for photos from s = 3000): the
/// extrapolation from `PREV` runs on the device, on both backends.
#[test]
fn momentum_planted_fit_matches_the_cpu() {
    let sp = spec(GateMode::Convex, 40, 12, 30, 700, 4);
    let mut cfg = IhtConfig::new(sp.nonzeros, 60, sp.gates);
    cfg.batch_size = Some(350);
    cfg.momentum = 0.3;
    let ((rg, wg), (rc, wc)) = both(&sp, &cfg, GpuOptions::default());
    assert!(rc.recovered && rg.recovered, "gpu {rg:?}\ncpu {rc:?}");
    assert_eq!(nonzero_support(&wg), nonzero_support(&wc));
    let between = (wg.dist2(&wc) / wc.norm2()).sqrt();
    assert!(between < 1e-4, "gpu vs cpu relative distance {between}");
}

/// Over-selecting minibatch updates on a growing support (`IhtConfig::candidates` and
/// `grow_from`, spinr's defaults for photos below s = 3000): twice `s` candidates through the
/// GPU's top-k, the prune, and two refinements per update, the first 9 epochs on 15 to 28
/// nonzeros, on both backends.
#[test]
fn over_selecting_planted_fit_matches_the_cpu() {
    let sp = spec(GateMode::Convex, 40, 12, 30, 700, 4);
    let mut cfg = IhtConfig::new(sp.nonzeros, 60, sp.gates);
    cfg.batch_size = Some(350);
    cfg.candidates = 2.0;
    cfg.inner = 2;
    cfg.grow_from = 0.5;
    let ((rg, wg), (rc, wc)) = both(&sp, &cfg, GpuOptions::default());
    assert!(rc.recovered && rg.recovered, "gpu {rg:?}\ncpu {rc:?}");
    assert_eq!(nonzero_support(&wg), nonzero_support(&wc));
    assert_eq!((wg.len(), wc.len()), (30, 30));
    let between = (wg.dist2(&wc) / wc.norm2()).sqrt();
    assert!(between < 1e-4, "gpu vs cpu relative distance {between}");
}

/// Sequential gates (the ReLU network): trajectories may part where a gate sits at x·w ≈ 0,
/// so compare the quality of the fits rather than the weights.
#[test]
fn sequential_planted_fit_is_as_good_as_the_cpu() {
    // A sequential fit is non-convex: f32 rounding on either backend can send one seed to
    // another local optimum (seen on an H100: seed 0 at 30.3 dB against 36.3 on the CPU; on
    // lavapipe, since the CPU's trials follow a held direction, the CPU recovers seed 0
    // exactly, 163 dB, where the GPU stops at 36 dB). So every GPU fit must generalise, and
    // the median over seeds, which one such seed cannot move far, must match.
    let (mut gpu, mut cpu) = (Vec::new(), Vec::new());
    for seed in 0..4 {
        let sp = spec(GateMode::Sequential, 50, 10, 10, 2000, seed);
        let cfg = IhtConfig::new(sp.nonzeros, 15, sp.gates);
        let ((rg, _), (rc, _)) = both(&sp, &cfg, GpuOptions::default());
        assert!(rg.test_psnr > 22.0, "{rg:?}");
        gpu.push(rg.train_psnr);
        cpu.push(rc.train_psnr);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[1] + v[2]) / 2.0
    };
    let (g, c) = (median(&mut gpu), median(&mut cpu));
    assert!(
        (g - c).abs() < 2.0,
        "median train PSNR: gpu {g:.2} dB ({gpu:?}), cpu {c:.2} dB ({cpu:?})"
    );
}

/// Gaussian compressed sensing (one block, all gates open).
#[test]
fn gaussian_sensing_recovers_on_the_gpu() {
    let sp = spec(GateMode::Gaussian, 50, 4, 20, 150, 1);
    let cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
    let ((rg, wg), (rc, wc)) = both(&sp, &cfg, GpuOptions::default());
    assert!(rg.recovered && rc.recovered, "gpu {rg:?}\ncpu {rc:?}");
    assert_eq!(nonzero_support(&wg), nonzero_support(&wc));
}

/// The support visited feature by feature (`GpuOptions::support_order`) in whole fits: the
/// convex reference fit recovers as on the CPU, and a sequential fit generalises.
#[test]
fn fits_by_feature_match_the_cpu() {
    let opts = GpuOptions {
        support_order: SupportOrder::Feature,
        ..Default::default()
    };
    let sp = spec(GateMode::Convex, 100, 50, 100, 2000, 0);
    let cfg = IhtConfig::new(sp.nonzeros, 100, sp.gates);
    let ((rg, wg), (rc, wc)) = both(&sp, &cfg, opts);
    assert!(rc.recovered && rg.recovered, "gpu {rg:?}\ncpu {rc:?}");
    assert_eq!(nonzero_support(&wg), nonzero_support(&wc));
}

/// Host round trips per minibatch update on the GPU (`GpuBackend::round_trips`): the residual,
/// the step size with the dense pass, the prune of an over-selecting update and the momentum
/// stay on the device, so an update waits for its thresholded vector's loss and its
/// refinement's records: 2 with momentum, 4 with candidates (each refinement twice), more only
/// when Armijo backtracks on the host.
#[test]
fn minibatch_updates_wait_only_for_the_numbers_they_need() {
    use spinr::iht::IhtLearner;
    use spinr::train::Learner;
    let sp = spec(GateMode::Sequential, 40, 12, 30, 700, 4);
    let planted = sp.build().unwrap();
    for (name, candidates, momentum, least) in
        [("momentum", 1.0, 0.3, 1), ("candidates", 2.0, 0.0, 2)]
    {
        let mut cfg = IhtConfig::new(sp.nonzeros, 10, sp.gates);
        cfg.candidates = candidates;
        cfg.momentum = momentum;
        let cap = cfg.pool(planted.train.signal_len());
        let mut gpu = GpuBackend::new(ctx(), planted.train.clone(), cap).unwrap();
        let batch: Vec<u32> = (0..350).collect();
        let trips = gpu.round_trip_counter();
        let count = || trips.load(std::sync::atomic::Ordering::Relaxed);
        let mut learner = IhtLearner::new(&mut gpu, &cfg).unwrap();
        let mut per_update = Vec::new();
        for u in 0..12 {
            let before = count();
            learner.update(Some(&batch)).unwrap();
            // Momentum extrapolates from the fifth update on.
            if u >= 5 {
                per_update.push(count() - before);
            }
        }
        eprintln!("{name}: {per_update:?}");
        assert_eq!(
            *per_update.iter().min().unwrap(),
            least,
            "{name}: {per_update:?}"
        );
    }
}
