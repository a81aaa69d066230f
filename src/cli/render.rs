//! `spinr render`: render a saved model at any size.

use super::DeviceArgs;
use crate::error::{Error, Param};
use crate::model;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The model file (model.safetensors written by `spinr fit`).
    pub model: PathBuf,
    /// Width in pixels (default: the fitted image's; with only --height, keeps the aspect ratio).
    #[arg(long, value_name = "W")]
    pub width: Option<usize>,
    /// Height in pixels (default: the fitted image's; with only --width, keeps the aspect ratio).
    #[arg(long, value_name = "H")]
    pub height: Option<usize>,
    /// The PNG to write (8-bit, the fitted image's channels).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Memory the render may use (e.g. 8G, 512M), checked before allocating. Default: what
    /// the machine has available.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_memory)]
    pub max_memory: Option<u64>,
}

/// The flag of `spinr render` that sets each quantity.
pub fn flag(p: Param) -> Option<&'static str> {
    match p {
        Param::Size => Some("--width"),
        _ => None,
    }
}

pub fn run(a: RenderArgs) -> anyhow::Result<()> {
    if let Some(ext) = a.out.extension() {
        if !ext.eq_ignore_ascii_case("png") {
            return Err(Error::arg(
                "--out",
                format!(
                    "{}: spinr renders PNG files; name it *.png",
                    a.out.display()
                ),
            )
            .into());
        }
    }
    let m = model::load_any(&a.model)?;
    let aspect = |num: usize, den: usize, x: usize| {
        ((x * num) as f64 / den as f64).round().max(1.0) as usize
    };
    let (height, width) = match (a.height, a.width) {
        (Some(h), Some(w)) => (h, w),
        (Some(h), None) => (h, aspect(m.width(), m.height(), h)),
        (None, Some(w)) => (aspect(m.height(), m.width(), w), w),
        (None, None) => (m.height(), m.width()),
    };
    if height == 0 || width == 0 {
        return Err(Error::arg("--width", "the rendered image needs at least 1×1 pixels").into());
    }
    // The pixel limit first (its message names the size), then the memory budget.
    crate::inr::image::check_pixels(height, width)?;
    m.render_memory(height, width).check(
        "this render",
        &super::memory_budget(a.max_memory),
        "render fewer pixels (--width, --height), or raise --max-memory",
    )?;
    let start = Instant::now();
    let image = m.render(a.device.backend, a.device.adapter.as_deref(), height, width)?;
    image.save_png(&a.out)?;
    eprintln!(
        "spinr: rendered {}×{} in {:.2} s",
        width,
        height,
        start.elapsed().as_secs_f64()
    );
    println!("wrote {}", a.out.display());
    Ok(())
}
