//! Side-by-side measurement (README, "Colour in luma and chroma planes"): a colour photo fitted
//! on the channel axis (the paper's model, `spinr fit --colour channel-axis`) and in luma and
//! chroma planes (spinr's default, [`spinr::inr::planes`]), one after the other on the CPU,
//! with the defaults of `spinr fit` for each. Prints one JSON line with both PSNRs and times:
//!
//! `cargo run --release --example luma_chroma -- IMAGE LONG S SEED [PLANE_EPOCHS [MOMENTUM]]`
//!
//! e.g. `assets/photos/chelsea.png 128 3000 0`. `LONG` is the longer side after resampling
//! (as `spinr fit --resize`); `PLANE_EPOCHS` defaults to the planes' default, 50, and
//! `MOMENTUM` (β of both fits, as `--momentum`) to spinr's default.

use spinr::backend::{self, BackendChoice};
use spinr::iht::{IhtChoices, Variant};
use spinr::inr::fit::{
    default_neurons, fit_iht, psnr, FitOptions, FitPlan, ImageFit, Method, DEFAULT_ITERS,
};
use spinr::inr::image::{self, Image};
use spinr::inr::planes::{self, Colour, PlanesPlan};
use std::ops::ControlFlow;
use std::path::Path;

fn fit(img: &Image, plan: &FitPlan) -> spinr::Result<ImageFit> {
    let problem = plan.problem(img)?;
    let mut be = backend::create_for(
        BackendChoice::Cpu,
        None,
        problem.clone(),
        plan.capacity(),
        plan.minibatch(),
    )?;
    fit_iht(img, plan, &problem, be.as_backend(), |_| {
        ControlFlow::Continue(())
    })
}

fn main() -> spinr::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: luma_chroma IMAGE LONG S SEED [PLANE_EPOCHS [MOMENTUM]]");
        std::process::exit(2);
    }
    let num = |i: usize| -> usize {
        a[i].parse().unwrap_or_else(|_| {
            eprintln!("luma_chroma: {:?} is not a number", a[i]);
            std::process::exit(2)
        })
    };
    let (long, s, seed) = (num(2), num(3), num(4) as u64);
    let plane_epochs = if a.len() > 5 {
        num(5)
    } else {
        planes::PLANE_ITERS
    };
    let momentum: Option<f32> = a.get(6).map(|v| {
        v.parse().unwrap_or_else(|_| {
            eprintln!("luma_chroma: {v:?} is not a momentum");
            std::process::exit(2)
        })
    });
    let img = image::load(Path::new(&a[1]), None)?;
    if img.channels != 3 {
        eprintln!("luma_chroma: {} is not a colour image", a[1]);
        std::process::exit(2);
    }
    let l = img.height.max(img.width) as f64;
    let side = |x: usize| ((x as f64 * long as f64 / l).round() as usize).max(1);
    let img = img.resized(side(img.height), side(img.width));
    let options = |colour, iters| FitOptions {
        nonzeros: s,
        neurons: default_neurons(Method::Iht, Variant::Spinr, s),
        iters,
        seed,
        colour: Some(colour),
        iht: IhtChoices {
            momentum,
            ..IhtChoices::default()
        },
        ..FitOptions::default()
    };

    let axis = fit(
        &img,
        &options(Colour::ChannelAxis, DEFAULT_ITERS).plan(&img)?,
    )?;
    let pp = PlanesPlan::new(&options(Colour::LumaChroma, plane_epochs), &img)?;
    let planes = planes::fit_planes(&pp, |_, image, plan| fit(image, plan))?;
    let score = |recon: &Image| psnr(spinr::metrics::mse(&recon.data, &img.data));
    println!(
        "{}",
        serde_json::json!({
            "image": a[1], "height": img.height, "width": img.width, "s": s, "seed": seed,
            "split": pp.plans.iter().map(|p| p.cfg.s).collect::<Vec<_>>(),
            "epochs": plane_epochs,
            "axis_psnr": score(&axis.recon), "axis_seconds": axis.seconds,
            "planes_psnr": score(&planes.recon), "planes_seconds": planes.seconds,
        })
    );
    Ok(())
}
