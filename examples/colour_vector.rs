//! Experiment (README, "Choosing σ"): a colour photo as one three-output network
//! `W2ᵀ relu(W1 φ(x, y))` on the spatial grid, a colour per neuron, instead of the channel
//! axis, trained by the vector-output IHT of `spinr classify` (`iht::vector`) with growing
//! minibatches. Prints its PSNR; not a `spinr fit` mode (no model file, no polish):
//!
//! `cargo run --release --example colour_vector -- IMAGE LONG S SEED EPOCHS B0 B1 [σ [M [K [OUT.png]]]]`
//!
//! e.g. `assets/photos/chelsea.png 128 3000 0 30 170 2720 10` (σ in cycles per image along
//! the longer side, batches growing from B0 to B1 samples). The features are cached as an
//! `n × d` matrix, so keep images small.

use spinr::backend::vector::{self, Targets, VectorProblem};
use spinr::backend::BackendChoice;
use spinr::iht::vector::{train, VectorTraining, SPINR_MU0};
use spinr::iht::Variant;
use spinr::inr::{gate_seed, image, Coords, InrSpec};
use spinr::problem::GateMode;
use spinr::train::Schedule;
use std::ops::ControlFlow;
use std::sync::Arc;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!("usage: colour_vector IMAGE LONG S SEED EPOCHS B0 B1 [SIGMA [M [K [OUT.png]]]]");
        std::process::exit(2);
    }
    let path = &a[1];
    let long: usize = a[2].parse().unwrap();
    let s: usize = a[3].parse().unwrap();
    let seed: u64 = a[4].parse().unwrap();
    let epochs: usize = a[5].parse().unwrap();
    let b0: usize = a[6].parse().unwrap();
    let b1: usize = a[7].parse().unwrap();
    let sigma: f64 = a.get(8).map(|x| x.parse().unwrap()).unwrap_or(20.0);
    let m: usize = a.get(9).map(|x| x.parse().unwrap()).unwrap_or(50);
    let inner: usize = a.get(10).map(|x| x.parse().unwrap()).unwrap_or(3);
    let img = image::load(std::path::Path::new(path), None).unwrap();
    let l = img.height.max(img.width) as f64;
    let f = |x: usize| ((x as f64 * long as f64 / l).round() as usize).max(1);
    let (h, w) = (f(img.height), f(img.width));
    let img = img.resized(h, w);
    let c = img.channels;
    let d = 512;
    let spec = InrSpec {
        neurons: m,
        features: d,
        sigma: vec![
            sigma * h as f64 / h.max(w) as f64,
            sigma * w as f64 / h.max(w) as f64,
        ],
        coords: Coords::Unit,
        feature_seed: seed,
        gate_seed: gate_seed(seed),
        gates: GateMode::Sequential,
        constant_feature: true,
        image_frequencies: Vec::new(),
    };
    let n = h * w;
    let prob = spec.problem(&[h, w], &[h, w], vec![0.0; n]).unwrap();
    let mut x = vec![0f32; n * d];
    for i in 0..n {
        prob.fill_row(i, &mut x[i * d..(i + 1) * d]);
    }
    let vp =
        Arc::new(VectorProblem::new(d, m, c, x, Targets::Values(img.data.clone()), seed).unwrap());
    let mut be = vector::create(BackendChoice::Cpu, None, vp.clone(), s, true).unwrap();
    let t = VectorTraining {
        s,
        variant: Variant::Spinr,
        inner,
        mu: SPINR_MU0,
        schedule: Schedule {
            n,
            epochs,
            batch_size: Some(b0),
            grow_to: (b1 != b0).then_some(b1),
            seed,
        },
    };
    let start = std::time::Instant::now();
    let (wbest, _) = train(be.as_mut(), &vp, &t, |_| ControlFlow::Continue(())).unwrap();
    be.load(spinr::backend::Slot::W, &wbest).unwrap();
    let pred: Vec<f32> = be
        .predict(spinr::backend::Slot::W)
        .unwrap()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect();
    let mse = spinr::metrics::mse(&pred, &img.data);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"psnr\": {:.3}, \"seconds\": {:.2}, \"nnz\": {}}}",
        -10.0 * mse.log10(),
        secs,
        wbest.len()
    );
    if let Some(out) = a.get(11) {
        image::Image {
            height: h,
            width: w,
            channels: c,
            data: pred,
        }
        .save_png(std::path::Path::new(out))
        .unwrap();
    }
}
