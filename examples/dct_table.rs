//! PSNR of the best s-term DCT approximation (the yardstick for sparse INR fits):
//! `cargo run --release --example dct_table -- [--sizes 128,256] [--s 1000,3000,10000] [--planes] IMAGE...`
//! Each image is resampled (Lanczos3, `Image::resized`) so its longer side is each size.
//! With `--planes` a colour image's cells also give the DCT of its luma and chroma planes,
//! the planes spinr fits, with the `s` terms split as a colour fit splits its nonzeros
//! (`planes::planes_dct`): "RGB / planes".

use spinr::inr::dct::dct_psnr;
use spinr::inr::{image, planes};
use std::path::Path;

fn list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect()
}

fn main() -> spinr::Result<()> {
    let (mut sizes, mut ss, mut paths) = (vec![128, 256], vec![1000, 3000, 10000], vec![]);
    let mut with_planes = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => sizes = list(&args.next().expect("--sizes LIST")),
            "--s" => ss = list(&args.next().expect("--s LIST")),
            "--planes" => with_planes = true,
            _ => paths.push(a),
        }
    }
    print!("| image | size |");
    for s in &ss {
        print!(" s = {s} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(ss.len()));
    for p in &paths {
        let img = image::load(Path::new(p), None)?;
        let name = Path::new(p)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for &n in &sizes {
            let long = img.height.max(img.width) as f64;
            let h = ((img.height as f64 * n as f64 / long).round() as usize).max(1);
            let w = ((img.width as f64 * n as f64 / long).round() as usize).max(1);
            let small = img.resized(h, w);
            print!("| {name} ({}) | {h}×{w} |", small.kind());
            for &s in &ss {
                if with_planes && small.channels == 3 {
                    let (rgb, lc) = (dct_psnr(&small, s)?, planes::planes_dct(&small, s)?.1);
                    print!(" {rgb:.2} / {lc:.2} |");
                } else {
                    print!(" {:.2} |", dct_psnr(&small, s)?);
                }
            }
            println!();
        }
    }
    Ok(())
}
