//! IMP end to end through the library: a planted network and an MNIST digit reach sensible
//! losses, the rounds count down from m·d + m·C by ⌈10%⌉ to at most s, one run reports every s
//! of a grid, and a fitted image model saves, reloads and renders its own predictions.

use rand::{Rng, SeedableRng};
use spinr::backend::BackendChoice;
use spinr::imp::{self, ImpDevice, ImpLoss, ImpOptions};
use spinr::inr::{self, Coords, InrSpec};
use spinr::metrics;
use spinr::problem::{Features, GateMode, Problem};
use std::ops::ControlFlow;
use std::path::Path;

/// Expected counts: from `total`, prune ⌈10%⌉ each round until at most `s` remain.
fn schedule(total: usize, s: usize) -> Vec<usize> {
    let mut v = vec![total];
    while *v.last().unwrap() > s {
        let r = *v.last().unwrap();
        v.push(r - (r as f64 * 0.1).ceil() as usize);
    }
    v
}

fn planted(n: usize, d: usize, seed: u64) -> Problem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    // Two planted neurons, output weights +1 and −0.5, on 3 features each.
    let y = (0..n)
        .map(|i| {
            let r = &x[i * d..(i + 1) * d];
            (r[0] + r[1] - r[2]).max(0.0) - 0.5 * (r[3] - r[4] + r[5]).max(0.0)
        })
        .collect();
    Problem::new(d, 1, Features::Dense(x), y, GateMode::Convex, 0).unwrap()
}

#[test]
fn imp_on_a_planted_network_reports_every_round_down_to_s() {
    let p = planted(400, 10, 1);
    let var = {
        let mean = p.y.iter().sum::<f32>() / p.y.len() as f32;
        p.y.iter().map(|y| (y - mean).powi(2)).sum::<f32>() as f64 / p.y.len() as f64
    };
    let opts = ImpOptions {
        neurons: 8,
        nonzeros: 12,
        epochs: 150,
        lr: 1e-2,
        seed: 3,
        ..Default::default()
    };
    let grid = [60usize, 30, 12];
    let mut first_at = vec![None; grid.len()];
    let mut counts = Vec::new();
    let res = imp::fit(&p, &opts, &ImpDevice::Cpu, |r| {
        counts.push(r.nonzeros);
        for (g, at) in grid.iter().zip(&mut first_at) {
            if r.nonzeros <= *g && at.is_none() {
                *at = Some((r.round, r.loss, r.model()));
            }
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let total = 8 * 10 + 8;
    assert_eq!(counts, schedule(total, 12));
    assert_eq!(res.nonzeros, *counts.last().unwrap());
    assert!(res.nonzeros <= 12 && !res.stopped);
    assert_eq!(res.rounds.len(), counts.len());
    assert!(res.peak_device_bytes >= 16 * total as u64);
    // The dense network fits well; the planted one has 8 weights, so 12 still fit.
    let dense = res.rounds[0].loss;
    assert!(dense < 0.01 * var, "dense loss {dense} vs variance {var}");
    assert!(
        res.loss < 0.02 * var,
        "final loss {} vs variance {var}",
        res.loss
    );
    for (g, at) in grid.iter().zip(&first_at) {
        let (_, loss, model) = at.as_ref().expect("every s of the grid is reached");
        assert!(model.nonzeros() <= *g);
        // The reported loss is the model's mean squared error.
        let pred = model.predict(&p.features, p.n, &ImpDevice::Cpu).unwrap();
        let mse = metrics::mse(&pred, &p.y);
        assert!(
            (mse - loss).abs() <= 1e-4 * loss.max(1e-9),
            "{mse} vs {loss}"
        );
    }
}

#[test]
fn imp_classifies_with_cross_entropy_and_minibatches() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (n, d) = (300, 6);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    // Three classes by which of the first three features is largest.
    let y: Vec<f32> = (0..n)
        .map(|i| {
            let r = &x[i * d..i * d + 3];
            (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as f32
        })
        .collect();
    let p = Problem::new(d, 1, Features::Dense(x), y, GateMode::Convex, 0).unwrap();
    let opts = ImpOptions {
        neurons: 16,
        nonzeros: 100,
        epochs: 30,
        batch_size: Some(64),
        lr: 1e-2,
        loss: ImpLoss::CrossEntropy { classes: 3 },
        ..Default::default()
    };
    let res = imp::fit(&p, &opts, &ImpDevice::Cpu, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(res.rounds[0].nonzeros, 16 * 6 + 16 * 3);
    // ln 3 ≈ 1.10 at chance.
    assert!(res.rounds[0].loss < 0.4, "{:?}", res.rounds[0]);
    let out = res.model.predict(&p.features, n, &ImpDevice::Cpu).unwrap();
    let correct = (0..n)
        .filter(|&i| {
            let o = &out[i * 3..(i + 1) * 3];
            (0..3).max_by(|&a, &b| o[a].total_cmp(&o[b])).unwrap() as f32 == p.y[i]
        })
        .count();
    assert!(correct as f64 > 0.95 * n as f64, "{correct} of {n}");
}

#[test]
fn an_imp_image_model_saves_loads_and_renders_its_predictions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist/images-idx3-ubyte.gz");
    let image = inr::image::load(&path, Some(3)).unwrap();
    let spec = InrSpec {
        neurons: 12,
        features: 64,
        sigma: vec![4.0, 4.0],
        coords: Coords::Unit,
        feature_seed: 7,
        gate_seed: inr::gate_seed(7),
        gates: GateMode::Sequential,
        constant_feature: true,
        image_frequencies: Vec::new(),
    };
    let axes = inr::grid_axes(image.height, image.width, image.channels);
    let p = spec.problem(&axes, &axes, image.data.clone()).unwrap();
    let opts = ImpOptions {
        neurons: 12,
        nonzeros: 300,
        epochs: 100,
        lr: 1e-2,
        seed: 1,
        ..Default::default()
    };
    let res = imp::fit(&p, &opts, &ImpDevice::Cpu, |_| ControlFlow::Continue(())).unwrap();
    let counts: Vec<usize> = res.rounds.iter().map(|r| r.nonzeros).collect();
    assert_eq!(counts, schedule(12 * 64 + 12, 300));
    let pred = res
        .model
        .predict(&p.features, p.n, &ImpDevice::Cpu)
        .unwrap();
    let clamped: Vec<f32> = pred.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let psnr = inr::fit::psnr(metrics::mse(&clamped, &image.data));
    assert!(psnr > 18.0, "PSNR {psnr}");

    let model = spinr::inr::ImageModel::from_imp(
        &res.model,
        &spec,
        image.height,
        image.width,
        image.channels,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imp.safetensors");
    spinr::model::save(&model, &file).unwrap();
    let back = spinr::model::load(&file).unwrap();
    assert_eq!(back, model);
    let img = back
        .render(BackendChoice::Cpu, None, image.height, image.width)
        .unwrap();
    assert_eq!(img.data, clamped);
}
