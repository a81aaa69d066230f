//! Library-level round trips: fit → save → load → render gives the same pixels and PSNR.

use spinr::backend::cpu::CpuBackend;
use spinr::backend::BackendChoice;
use spinr::iht::{self, IhtConfig};
use spinr::inr::{self, Coords, ImageModel, InrSpec};
use spinr::metrics;
use spinr::problem::GateMode;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

fn digit(index: usize) -> inr::Image {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist/images-idx3-ubyte.gz");
    inr::image::load(&p, Some(index)).unwrap()
}

fn spec(coords: Coords, sigma: f64, gates: GateMode) -> InrSpec {
    InrSpec {
        neurons: 10,
        features: 256,
        sigma: vec![sigma, sigma],
        coords,
        feature_seed: 4,
        gate_seed: inr::gate_seed(4),
        gates,
        constant_feature: true,
        image_frequencies: Vec::new(),
    }
}

/// Fits `image`, stopping after `stop_after` epochs through the observer (as Ctrl-C does).
fn fit(
    image: &inr::Image,
    spec: &InrSpec,
    s: usize,
    iters: usize,
    stop_after: usize,
) -> (ImageModel, Vec<f32>, usize) {
    let axes = inr::grid_axes(image.height, image.width, image.channels);
    let problem = Arc::new(spec.problem(&axes, &axes, image.data.clone()).unwrap());
    let mut be = CpuBackend::new(problem, s, spinr::backend::DEFAULT_FEATURE_CACHE).unwrap();
    let cfg = IhtConfig::new(s, iters, spec.gates);
    let res = iht::fit(&mut be, image.data.len(), &cfg, |r| {
        if r.epoch + 1 >= stop_after {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    let pred = inr::predict(&mut be, &res.w, res.gating).unwrap();
    let model = ImageModel {
        spec: spec.clone(),
        height: image.height,
        width: image.width,
        channels: image.channels,
        gating: res.gating,
        w: res.w,
        output: None,
        dct: Default::default(),
    };
    (model, pred, res.iterations)
}

#[test]
fn a_reloaded_model_renders_the_fits_pixels_and_psnr() {
    let img = digit(10);
    for (gates, coords, sigma) in [
        (GateMode::Sequential, Coords::Pixel, 2.0),
        (GateMode::Convex, Coords::Unit, 8.0),
    ] {
        let sp = spec(coords, sigma, gates);
        let (model, pred, _) = fit(&img, &sp, 400, 25, usize::MAX);
        let fit_psnr = metrics::psnr_from_mse(metrics::mse(&pred, &img.data), 1.0);
        assert!(fit_psnr > 25.0, "{gates:?}/{coords:?}: PSNR {fit_psnr}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        spinr::model::save(&model, &path).unwrap();
        let back = spinr::model::load(&path).unwrap();
        assert_eq!(back, model);
        let r = back
            .render(BackendChoice::Cpu, None, img.height, img.width)
            .unwrap();
        assert_eq!(
            r.data, pred,
            "{gates:?}/{coords:?}: rendered pixels differ from the fit's"
        );
        let render_psnr = metrics::psnr_from_mse(metrics::mse(&r.data, &img.data), 1.0);
        assert_eq!(render_psnr, fit_psnr);
    }
}

#[test]
fn a_fit_stopped_early_saves_a_complete_model() {
    let img = digit(3);
    let sp = spec(Coords::Pixel, 2.0, GateMode::Sequential);
    let (model, pred, iterations) = fit(&img, &sp, 300, 1000, 3);
    assert_eq!(iterations, 3);
    assert_eq!(model.w.len(), 300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    spinr::model::save(&model, &path).unwrap();
    let back = spinr::model::load(&path).unwrap();
    let r = back.render(BackendChoice::Cpu, None, 28, 28).unwrap();
    assert_eq!(r.data, pred);
}

/// A unit-coordinate model is a continuous function: rendered at twice the size and averaged
/// back over 2×2 blocks it stays close to the fit.
#[test]
fn unit_coordinates_render_smoothly_at_other_sizes() {
    let img = digit(10);
    let sp = spec(Coords::Unit, 6.0, GateMode::Sequential);
    let (model, pred, _) = fit(&img, &sp, 500, 30, usize::MAX);
    let big = model.render(BackendChoice::Cpu, None, 56, 56).unwrap();
    let mut down = vec![0f32; 28 * 28];
    for r in 0..28 {
        for c in 0..28 {
            let mut acc = 0.0;
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                acc += big.data[(2 * r + dr) * 56 + 2 * c + dc];
            }
            down[r * 28 + c] = acc / 4.0;
        }
    }
    let p = metrics::psnr_from_mse(metrics::mse(&down, &pred), 1.0);
    assert!(
        p > 20.0,
        "2× render averaged back is {p:.2} dB from the fit"
    );
}

/// A fitted network of `s` weights on `image` (unit coordinates, no polish), for the polish
/// tests below to start from, and the problem it was fitted on.
fn unpolished(
    image: &inr::Image,
    s: usize,
) -> (spinr::sparse::SparseVec, Arc<spinr::problem::Problem>) {
    let spec = spec(Coords::Unit, 3.0, GateMode::Sequential);
    let axes = inr::grid_axes(image.height, image.width, image.channels);
    let problem = Arc::new(spec.problem(&axes, &axes, image.data.clone()).unwrap());
    let mut be =
        CpuBackend::new(problem.clone(), s, spinr::backend::DEFAULT_FEATURE_CACHE).unwrap();
    let cfg = IhtConfig::new(s, 15, GateMode::Sequential);
    assert_eq!(cfg.polish, 0);
    let res = iht::fit(&mut be, image.data.len(), &cfg, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(res.gating, iht::Gating::SelfGated);
    (res.w, problem)
}

/// A polish from `w` on a fresh backend of `problem` (slot `BEST`), with `targets`; returns
/// the polished network and the backend.
fn polished(
    w: &spinr::sparse::SparseVec,
    problem: &Arc<spinr::problem::Problem>,
    targets: Option<&mut dyn iht::PolishTargets>,
) -> (spinr::sparse::SparseVec, CpuBackend) {
    use spinr::backend::{Backend, GateSource, Slot};
    let s = w.len();
    let mut be =
        CpuBackend::new(problem.clone(), s, spinr::backend::DEFAULT_FEATURE_CACHE).unwrap();
    be.load(Slot::BEST, w).unwrap();
    be.set_gates(GateSource::Slot(Slot::BEST)).unwrap();
    let loss = be.forward(Slot::BEST).unwrap();
    let cfg = IhtConfig {
        polish: 3,
        ..IhtConfig::new(s, 15, GateMode::Sequential)
    };
    iht::polish(&mut be, &cfg, loss, targets).unwrap();
    (be.read(Slot::BEST).unwrap(), be)
}

/// The polish's targets (`iht::PolishTargets`) are what its rounds fit: given fixed targets,
/// it ends exactly where a polish of a problem built with them ends, and leaves the
/// problem's own targets in force afterwards.
#[test]
fn a_polish_with_other_targets_fits_them_and_restores_the_problems() {
    use spinr::backend::{Backend, GateSource, Slot};
    struct Fixed(Vec<f32>);
    impl iht::PolishTargets for Fixed {
        fn targets(&mut self, prediction: &[f32]) -> spinr::Result<Vec<f32>> {
            assert_eq!(prediction.len(), self.0.len());
            Ok(self.0.clone())
        }
    }
    let img = digit(3);
    let (w, problem) = unpolished(&img, 60);
    let other: Vec<f32> = problem.y.iter().map(|&y| 0.8 * y + 0.1).collect();
    let with_other = Arc::new(spinr::problem::Problem {
        y: other.clone(),
        ..(*problem).clone()
    });
    let (direct, _) = polished(&w, &with_other, None);
    let (retargeted, mut be) = polished(&w, &problem, Some(&mut Fixed(other)));
    assert_ne!(direct, w, "the polish changed nothing");
    assert_eq!(retargeted, direct);
    let (_, mut own) = polished(&w, &problem, None);
    for b in [&mut be as &mut dyn Backend, &mut own] {
        b.load(Slot::W, &direct).unwrap();
        b.set_gates(GateSource::Slot(Slot::W)).unwrap();
    }
    assert_eq!(be.forward(Slot::W).unwrap(), own.forward(Slot::W).unwrap());
}

/// With DCT terms the polish fits the network to what its terms leave
/// (`inr::terms::TermsLeft`), so the model of network and terms fits better than a network
/// polished alone and given its terms afterwards, and better than the unpolished network
/// with its terms.
#[test]
fn a_polish_with_dct_terms_fits_network_and_terms_together() {
    use inr::terms::{DctTerms, TermsLeft};
    let img = digit(7);
    let (w, problem) = unpolished(&img, 80);
    let k = 20;
    let mse = |w: &spinr::sparse::SparseVec| {
        let mut be = CpuBackend::new(problem.clone(), 80, 0).unwrap();
        let mut pred = inr::predict_unclamped(&mut be, w, iht::Gating::SelfGated).unwrap();
        let terms = DctTerms::of_residual(&img, &pred, k).unwrap();
        assert_eq!(terms.len(), k);
        let (h, w) = (img.height, img.width);
        terms.add_to((h, w), (h, w, 1), &mut pred);
        metrics::mse(&pred, &img.data)
    };
    let (alone, _) = polished(&w, &problem, None);
    let mut left = TermsLeft { image: &img, k };
    let (together, _) = polished(&w, &problem, Some(&mut left));
    let (before, after, joint) = (mse(&w), mse(&alone), mse(&together));
    assert!(joint < after && after < before, "{before} {after} {joint}");
}
