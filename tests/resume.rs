//! Stopping a fit at a pause and resuming it from the saved checkpoint, in-process: on the CPU
//! the resumed fit ends bit for bit where the uninterrupted one does (weights, reconstruction,
//! epochs), from a pause inside an epoch and from one between epochs, with minibatches of one
//! size, growing minibatches and full batch (rescues and polish included); on the GPU it reaches the same PSNR within 0.1 dB.
//! The CLI side (signals, files, refusals) is `tests/cli_resume.rs`.

use spinr::backend::cpu::CpuBackend;
use spinr::backend::gpu::{GpuBackend, GpuOptions};
use spinr::backend::Backend;
use spinr::checkpoint::Checkpoint;
use spinr::iht::{Checkpointer, IhtState, NoCheckpoints, Resume};
use spinr::inr::fit::{self as inr_fit, BatchChoice, FitOptions, FitPlan, ImageFit};
use spinr::inr::{image as img, Image};
use spinr::metrics;
use spinr::train::LoopState;
use std::ops::ControlFlow;

mod common;

/// Stops at the `k`-th pause after saving there (through the checkpoint file format).
struct StopAt {
    k: usize,
    seen: usize,
    saved: Option<Vec<u8>>,
}

impl Checkpointer for StopAt {
    fn due(&mut self, _: &LoopState) -> bool {
        self.seen += 1;
        self.seen == self.k
    }
    fn save(&mut self, at: &LoopState, state: IhtState) -> spinr::Result<ControlFlow<()>> {
        let c = Checkpoint {
            run: serde_json::json!({}),
            at: at.clone(),
            state,
            seconds: 0.0,
        };
        self.saved = Some(c.to_bytes()?);
        Ok(ControlFlow::Break(()))
    }
}

fn image(side: usize) -> Image {
    img::load(&common::asset("camera.png"), None)
        .unwrap()
        .resized(side, side)
}

fn plan(image: &Image, batch: BatchChoice, iters: usize) -> FitPlan {
    FitOptions {
        neurons: 40,
        nonzeros: 400,
        features: 64,
        iters,
        batch,
        ..FitOptions::default()
    }
    .plan(image)
    .unwrap()
}

fn fit(
    make: &dyn Fn(&FitPlan) -> Box<dyn Backend>,
    image: &Image,
    plan: &FitPlan,
    resume: Option<&Resume>,
    checkpoints: &mut dyn Checkpointer,
) -> ImageFit {
    let problem = plan.problem(image).unwrap();
    let mut be = make(plan);
    inr_fit::fit_iht_from(
        image,
        plan,
        &problem,
        be.as_mut(),
        resume,
        |_| ControlFlow::Continue(()),
        checkpoints,
    )
    .unwrap()
}

/// The uninterrupted fit, and the fit stopped at pause `k` and resumed from its checkpoint.
fn whole_and_resumed(
    make: &dyn Fn(&FitPlan) -> Box<dyn Backend>,
    image: &Image,
    plan: &FitPlan,
    k: usize,
) -> (ImageFit, ImageFit, LoopState) {
    let whole = fit(make, image, plan, None, &mut NoCheckpoints);
    let mut stop = StopAt {
        k,
        seen: 0,
        saved: None,
    };
    let first = fit(make, image, plan, None, &mut stop);
    assert!(first.stopped, "pause {k} is inside the fit");
    let c = Checkpoint::from_bytes(&stop.saved.unwrap()).unwrap();
    let resume = Resume {
        at: c.at.clone(),
        state: c.state,
    };
    let rest = fit(make, image, plan, Some(&resume), &mut NoCheckpoints);
    (whole, rest, c.at)
}

fn cpu(plan: &FitPlan, image: &Image) -> Box<dyn Backend> {
    Box::new(CpuBackend::new(plan.problem(image).unwrap(), plan.capacity(), 1 << 30).unwrap())
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_resumed_cpu_fit_is_bit_identical_to_an_uninterrupted_one() {
    let im = image(40);
    // Minibatches of 400 over 1600 samples: pauses 1–3 inside epoch 0, 4 after it, ….
    let mini = plan(&im, BatchChoice::Samples(400), 6);
    // spinr's minibatch defaults grow the support: of the 400 nonzeros the network has 333
    // (67 are DCT terms, added after the epochs), epoch 0 keeps 167 of them, so the pauses
    // inside it resume on that share (`Learner::begin_epoch`).
    assert_eq!(mini.dct_terms, 67);
    assert_eq!((mini.cfg.support_at(0), mini.cfg.support_at(1)), (167, 333));
    // Growing batches: 200, 264, 348, 459, 606, 800 samples (8, 7, 5, 4, 3, 2 updates).
    let grow = plan(&im, BatchChoice::Grow(200, 800), 6);
    assert_eq!(
        (0..6)
            .map(|e| grow.schedule().updates_in(e))
            .collect::<Vec<_>>(),
        [8, 7, 5, 4, 3, 2]
    );
    // With momentum: the learner's state includes `W` before the last update.
    let mut mom = plan(&im, BatchChoice::Grow(200, 800), 6);
    mom.cfg.momentum = 0.3;
    // Full batch: rescues every 5 epochs, then the polish rounds.
    let full = plan(&im, BatchChoice::Full, 12);
    assert!(full.cfg.rescue && full.cfg.polish > 0);
    let make = |p: &FitPlan| cpu(p, &im);
    let make: &dyn Fn(&FitPlan) -> Box<dyn Backend> = &make;
    // Momentum changes the fit (so its resume below tests the saved `W_prev`).
    assert_ne!(
        bits(&whole_and_resumed(make, &im, &mom, 5).0.model.w.values),
        bits(&whole_and_resumed(make, &im, &grow, 5).0.model.w.values)
    );
    for (p, k) in [
        (&mini, 2),
        (&mini, 4),
        (&mini, 11),
        (&grow, 3),
        (&grow, 12),
        (&grow, 27),
        (&mom, 5),
        (&mom, 20),
        (&full, 3),
        (&full, 7),
    ] {
        let (whole, rest, at) = whole_and_resumed(make, &im, p, k);
        eprintln!("resumed at {at:?}");
        assert!(!rest.stopped);
        assert_eq!(rest.iterations, whole.iterations);
        assert_eq!(rest.model.w.indices, whole.model.w.indices, "at {at:?}");
        assert_eq!(bits(&rest.model.w.values), bits(&whole.model.w.values));
        assert_eq!(rest.model.gating, whole.model.gating);
        assert_eq!(rest.model.dct.indices, whole.model.dct.indices);
        assert_eq!(bits(&rest.model.dct.values), bits(&whole.model.dct.values));
        assert_eq!(bits(&rest.recon.data), bits(&whole.recon.data));
    }
}

#[test]
fn a_resumed_gpu_fit_reaches_the_same_psnr() {
    let ctx = common::gpu_ctx();
    let im = image(32);
    let p = plan(&im, BatchChoice::Samples(256), 5);
    let make = |p: &FitPlan| -> Box<dyn Backend> {
        Box::new(
            GpuBackend::with_options(
                ctx.clone(),
                p.problem(&im).unwrap(),
                p.capacity(),
                GpuOptions::default(),
            )
            .unwrap(),
        )
    };
    let (whole, rest, at) = whole_and_resumed(&make, &im, &p, 6);
    let psnr = |f: &ImageFit| {
        let mse = f
            .recon
            .data
            .iter()
            .zip(&im.data)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / im.data.len() as f64;
        metrics::psnr_from_mse(mse, 1.0)
    };
    eprintln!(
        "GPU resumed at {at:?}: {:.3} dB, uninterrupted {:.3} dB",
        psnr(&rest),
        psnr(&whole)
    );
    assert_eq!(rest.iterations, whole.iterations);
    assert!((psnr(&rest) - psnr(&whole)).abs() <= 0.1);
}
