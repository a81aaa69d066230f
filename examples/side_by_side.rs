//! Side-by-side crops of a fit: the original, spinr's reconstruction and the best DCT
//! approximation with as many terms as the model has nonzeros, at the fitted size:
//! `cargo run --release --example side_by_side -- FIT_DIR [--crop ROW,COL,H,W] [--scale K] --out FILE.png`
//!
//! FIT_DIR is a `spinr fit --out` folder (its `report.json` names the image, the fitted size
//! and `s`; its `reconstruction.png` is what the model renders). The crop is in fitted pixels
//! (default: the whole image); each panel is scaled up `K` times (nearest neighbour, default 3)
//! so single pixels stay visible. Prints the PSNR of each panel's crop against the original.

use spinr::inr::dct::dct_approximation;
use spinr::inr::image::{self, Image};
use spinr::metrics::mse;
use std::path::{Path, PathBuf};

fn fail(msg: &str) -> ! {
    eprintln!("side_by_side: {msg}");
    std::process::exit(2)
}

fn numbers(v: &str, what: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| fail(&format!("{what}: {x:?} is not a number")))
        })
        .collect()
}

/// Rows `r0..r0+h`, columns `c0..c0+w` of `img`.
fn crop(img: &Image, r0: usize, c0: usize, h: usize, w: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(h * w * c);
    for r in r0..r0 + h {
        let at = (r * img.width + c0) * c;
        data.extend_from_slice(&img.data[at..at + w * c]);
    }
    Image {
        height: h,
        width: w,
        channels: c,
        data,
    }
}

/// The panels side by side, each scaled `k` times, with white gaps between them.
fn row_of(panels: &[Image], k: usize, gap: usize) -> Image {
    let (h, w, c) = (panels[0].height, panels[0].width, panels[0].channels);
    let width = panels.len() * w * k + (panels.len() - 1) * gap;
    let mut data = vec![1.0f32; h * k * width * c];
    for (p, img) in panels.iter().enumerate() {
        let x0 = p * (w * k + gap);
        for r in 0..h * k {
            for col in 0..w * k {
                let src = ((r / k) * w + col / k) * c;
                let dst = (r * width + x0 + col) * c;
                data[dst..dst + c].copy_from_slice(&img.data[src..src + c]);
            }
        }
    }
    Image {
        height: h * k,
        width,
        channels: c,
        data,
    }
}

fn psnr(a: &Image, b: &Image) -> f64 {
    -10.0 * mse(&a.data, &b.data).log10()
}

/// Mean squares per pixel along the orthonormal colour directions luma `(R+G+B)/√3`,
/// `(R−B)/√2` and green–magenta `(R−2G+B)/√6` of `x` (an RGB image, or a difference of two).
fn colour_energy(x: &[f32]) -> [f64; 3] {
    let mut e = [0.0; 3];
    let dirs = [
        [1.0 / 3f64.sqrt(); 3],
        [1.0 / 2f64.sqrt(), 0.0, -1.0 / 2f64.sqrt()],
        [1.0 / 6f64.sqrt(), -2.0 / 6f64.sqrt(), 1.0 / 6f64.sqrt()],
    ];
    for px in x.chunks_exact(3) {
        for (k, d) in dirs.iter().enumerate() {
            let v: f64 = (0..3).map(|c| d[c] * px[c] as f64).sum();
            e[k] += v * v;
        }
    }
    e.map(|v| v / (x.len() / 3) as f64)
}

/// For colour panels: where the error of each panel lies, against the signal's own spread in
/// each direction (its variance about the crop's mean colour).
fn print_colour_errors(panels: &[Image]) {
    let mean: Vec<f32> = (0..3)
        .map(|c| {
            let v = &panels[0].data;
            (v.iter().skip(c).step_by(3).map(|&x| x as f64).sum::<f64>() / (v.len() / 3) as f64)
                as f32
        })
        .collect();
    let centred: Vec<f32> = panels[0]
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| v - mean[i % 3])
        .collect();
    let signal = colour_energy(&centred);
    println!(
        "signal variance per pixel, luma / R−B / green–magenta: {:.2e} / {:.2e} / {:.2e}",
        signal[0], signal[1], signal[2]
    );
    for (name, p) in [("spinr", &panels[1]), ("DCT", &panels[2])] {
        let diff: Vec<f32> = p
            .data
            .iter()
            .zip(&panels[0].data)
            .map(|(a, b)| a - b)
            .collect();
        let e = colour_energy(&diff);
        println!(
            "{name} error per pixel, luma / R−B / green–magenta: {:.2e} / {:.2e} / {:.2e}",
            e[0], e[1], e[2]
        );
    }
}

fn main() -> spinr::Result<()> {
    let (mut dir, mut out, mut crop_at, mut k) = (None::<PathBuf>, None::<PathBuf>, None, 3);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(value())),
            "--crop" => crop_at = Some(numbers(&value(), "--crop")),
            "--scale" => k = numbers(&value(), "--scale")[0].max(1),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => fail(&format!("unexpected argument {a:?}")),
        }
    }
    let dir = dir.unwrap_or_else(|| fail("give the folder of a fit (spinr fit --out DIR)"));
    let out = out.unwrap_or_else(|| fail("give --out FILE.png"));
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("report.json"))
            .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.join("report.json").display()))),
    )
    .unwrap_or_else(|e| fail(&format!("report.json: {e}")));
    let field = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| fail(&format!("report.json has no {key}"))) as usize
    };
    let (h, w, s) = (field("height"), field("width"), field("nonzeros"));
    let path = report["image"]
        .as_str()
        .unwrap_or_else(|| fail("report.json has no image"));
    let mut original = image::load(Path::new(path), None)?;
    if (original.height, original.width) != (h, w) {
        // As `spinr fit --resize` resampled it.
        original = original.resized(h, w);
    }
    let recon = image::load(&dir.join("reconstruction.png"), None)?;
    if (recon.height, recon.width, recon.channels) != (h, w, original.channels) {
        fail("reconstruction.png does not match the report's size");
    }
    let dct = dct_approximation(&original, s)?;
    let [r0, c0, ch, cw] = match crop_at.as_deref() {
        None => [0, 0, h, w],
        Some(&[r0, c0, ch, cw]) if ch > 0 && cw > 0 && r0 + ch <= h && c0 + cw <= w => {
            [r0, c0, ch, cw]
        }
        Some(_) => fail(&format!(
            "--crop ROW,COL,H,W must lie inside the fitted {h}×{w} image"
        )),
    };
    let panels: Vec<Image> = [&original, &recon, &dct]
        .iter()
        .map(|img| crop(img, r0, c0, ch, cw))
        .collect();
    println!(
        "crop {ch}×{cw} at ({r0}, {c0}): spinr {:.2} dB, DCT with {s} terms {:.2} dB",
        psnr(&panels[1], &panels[0]),
        psnr(&panels[2], &panels[0])
    );
    if original.channels == 3 {
        print_colour_errors(&panels);
    }
    row_of(&panels, k, 2 * k).save_png(&out)?;
    println!("wrote {} (original | spinr | DCT)", out.display());
    Ok(())
}
