//! End-to-end tests of `spinr fit` and `spinr render`: the real binary, a fresh temp dir each.

mod common;

use common::{mnist, stderr};
use serde::Deserialize;
use std::path::Path;
use std::process::Output;

/// report.json, read back strictly: an unknown or missing key fails the test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    status: String,
    image: String,
    height: usize,
    width: usize,
    channels: usize,
    method: String,
    variant: String,
    neurons: usize,
    features: usize,
    nonzeros: usize,
    dct_terms: usize,
    sigma: Vec<f64>,
    coords: String,
    constant_feature: bool,
    gates: String,
    gating: Option<String>,
    seed: u64,
    gate_seed: u64,
    iters: usize,
    time_budget: Option<f64>,
    iterations: usize,
    batch_size: Option<usize>,
    batch_size_end: Option<usize>,
    inner: usize,
    first_step: String,
    refine: String,
    momentum: f32,
    candidates: f32,
    grow_from: f32,
    psnr: f64,
    psnr_8bit: Option<f64>,
    dct_psnr: Option<f64>,
    dct_planes_psnr: Option<f64>,
    ssim: Option<f64>,
    seconds: f64,
    backend: String,
    adapter: String,
    peak_device_bytes: u64,
    model_bytes: Option<u64>,
    bits_per_pixel: Option<f64>,
    stopped: bool,
    out_dir: String,
    spinr_version: String,
    colour: Option<String>,
    planes: Option<Vec<PlaneRow>>,
    frequencies: String,
}

/// One plane of a luma-chroma fit in report.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PlaneRow {
    plane: String,
    nonzeros: usize,
    dct_terms: usize,
    neurons: usize,
    sigma: Vec<f64>,
    iterations: usize,
    psnr: f64,
    dct_psnr: Option<f64>,
    seconds: f64,
    frequencies: String,
}

/// `spinr args` in `dir` on the CPU backend.
fn spinr(dir: &Path, args: &[&str]) -> Output {
    common::command(dir)
        .args(args)
        .env("SPINR_BACKEND", "cpu")
        .output()
        .expect("run spinr")
}

fn read_report(dir: &Path) -> Report {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"))
}

/// Decodes a PNG to (width, height, channels, bytes).
fn png(path: &Path) -> (u32, u32, u8, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let c = img.color().channel_count();
    (img.width(), img.height(), c, img.into_bytes())
}

/// `spinr render` of the model in `dir/out` at its own size gives its `reconstruction.png`
/// byte for byte.
#[track_caller]
fn assert_renders_its_reconstruction(dir: &Path, out: &str) {
    let model = format!("{out}/model.safetensors");
    let again = format!("{out}-again.png");
    let o = spinr(dir, &["render", &model, "--out", &again]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        png(&dir.join(&again)).3,
        png(&dir.join(out).join("reconstruction.png")).3
    );
}

fn psnr_u8(a: &[u8], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| ((x as f32 / 255.0) as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    -10.0 * mse.log10()
}

/// The paper's digit setting, shortened: PSNR must clear a bound, and every output must be
/// complete and consistent.
#[test]
fn fits_an_mnist_digit_and_renders_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = mnist();
    let out = spinr(
        dir.path(),
        &[
            "fit",
            img.to_str().unwrap(),
            "--index",
            "10",
            "--coords",
            "pixel",
            "--sigma",
            "2",
            "--features",
            "1500",
            "-m",
            "10",
            "-s",
            "1000",
            "--iters",
            "40",
            "--inner",
            "10",
            "--seed",
            "2",
            "--out",
            "digit",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // --json: stdout is exactly the report.
    let printed: Report = serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    let d = dir.path().join("digit");
    let r = read_report(&d);
    assert_eq!(printed.psnr, r.psnr);
    assert_eq!(r.status, "done");
    assert!(!r.stopped);
    assert_eq!((r.height, r.width, r.channels), (28, 28, 1));
    assert_eq!((r.neurons, r.nonzeros, r.features), (10, 1000, 1500));
    assert_eq!(r.iterations, 40);
    assert_eq!(r.backend, "cpu");
    assert_eq!(r.gating.as_deref(), Some("relu"));
    assert!(
        r.dct_psnr.is_some() && r.dct_planes_psnr.is_none(),
        "gray: one yardstick"
    );
    assert_eq!((r.batch_size, r.batch_size_end), (None, None));
    assert!(
        r.psnr > 60.0,
        "digit PSNR {} dB is below the 60 dB bound",
        r.psnr
    );
    assert!(r.ssim.unwrap() > 0.99);
    assert!(r.peak_device_bytes > 0);
    let model_len = std::fs::metadata(d.join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(r.model_bytes, Some(model_len));
    assert!((r.bits_per_pixel.unwrap() - model_len as f64 * 8.0 / 784.0).abs() < 1e-9);

    // The reconstruction is the digit at 8 bits, and its PSNR is the report's.
    let digit = spinr::inr::image::load(&img, Some(10)).unwrap();
    let (w, h, c, recon) = png(&d.join("reconstruction.png"));
    assert_eq!((w, h, c), (28, 28, 1));
    let p8 = psnr_u8(&recon, &digit.data).min(200.0);
    assert!(
        (p8 - r.psnr_8bit.unwrap()).abs() < 1e-6,
        "{p8} vs {:?}",
        r.psnr_8bit
    );

    // A reloaded model renders the same pixels.
    assert_renders_its_reconstruction(dir.path(), "digit");

    // At another size a pixel-coordinate model is resampled onto its grid.
    let out = spinr(
        dir.path(),
        &[
            "render",
            "digit/model.safetensors",
            "--width",
            "56",
            "--out",
            "big.png",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (w, h, c, _) = png(&dir.path().join("big.png"));
    assert_eq!((w, h, c), (56, 56, 1));

    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["model.safetensors", "reconstruction.png", "report.json"]
    );
}

/// A one-pixel-high image fits; its SSIM, which needs two rows, is reported as missing
/// (JSON null, "n/a" in the summary), never as NaN.
#[test]
fn a_single_row_image_fits_without_an_ssim() {
    let dir = tempfile::tempdir().unwrap();
    let src = image::ImageBuffer::from_fn(90, 1, |x, _| image::Luma([(x * 37 % 256) as u8]));
    src.save(dir.path().join("row.png")).unwrap();
    let out = spinr(
        dir.path(),
        &["fit", "row.png", "-s", "40", "--iters", "3", "--out", "row"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SSIM n/a"), "{text}");
    assert!(!text.contains("NaN"), "{text}");
    let r = read_report(&dir.path().join("row"));
    assert_eq!((r.height, r.width, r.ssim), (1, 90, None));
    assert!(r.psnr.is_finite());
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = mnist();
    let args = [
        "fit",
        img.to_str().unwrap(),
        "--index",
        "3",
        "-m",
        "4",
        "-s",
        "50",
        "-d",
        "64",
        "--iters",
        "2",
        "--out",
        "o",
    ];
    assert!(spinr(dir.path(), &args).status.success());
    let before = std::fs::read(dir.path().join("o/model.safetensors")).unwrap();
    let mut again = args.to_vec();
    let iters_at = again.len() - 3;
    again[iters_at] = "3"; // a different fit
    let out = spinr(dir.path(), &again);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.path().join("o/model.safetensors")).unwrap(),
        before
    );
    again.push("--force");
    let out = spinr(dir.path(), &again);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_report(&dir.path().join("o")).iterations, 3);
}

#[test]
fn default_output_folder_is_beside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = image::GrayImage::from_fn(12, 10, |x, y| image::Luma([(x * 20 + y * 3) as u8]));
    src.save(dir.path().join("ramp.png")).unwrap();
    let out = spinr(
        dir.path(),
        &[
            "fit", "ramp.png", "-m", "4", "-s", "40", "-d", "32", "--iters", "3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let d = dir.path().join("ramp.spinr-out");
    let r = read_report(&d);
    assert_eq!((r.height, r.width, r.channels), (10, 12, 1));
    assert_eq!(r.coords, "unit");
    assert!(r.constant_feature);
    // stdout says where the outputs went.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ramp.spinr-out/model.safetensors"),
        "{stdout}"
    );
}

/// Colour images: 16-bit and alpha are read, the outputs are RGB at the input's size. By
/// default spinr fits luma and two chroma planes, each a gray network with its share of `s`;
/// `--colour channel-axis` is the paper's one network with the channel as a third axis.
#[test]
fn fits_colour_and_sixteen_bit_images() {
    let dir = tempfile::tempdir().unwrap();
    // Channels correlated as in natural images (a tinted smooth pattern), fully opaque.
    let src = image::ImageBuffer::from_fn(16, 12, |x, y| {
        let l = 0.5 + 0.4 * (x as f32 / 5.0).sin() * (y as f32 / 4.0).cos();
        let q = |v: f32| (v * 65535.0).round() as u16;
        image::Rgba([q(l), q(0.8 * l + 0.1), q(0.6 * l + 0.2), 65535])
    });
    image::DynamicImage::ImageRgba16(src)
        .save(dir.path().join("c16.png"))
        .unwrap();
    let fit = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "fit", "c16.png", "-m", "8", "-s", "400", "-d", "128", "--iters", "30", "--out", out,
        ];
        args.extend_from_slice(extra);
        let out = spinr(dir.path(), &args);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    fit("c", &[]);
    let r = read_report(&dir.path().join("c"));
    assert_eq!((r.height, r.width, r.channels), (12, 16, 3));
    assert_eq!(r.colour.as_deref(), Some("luma-chroma"));
    let planes = r
        .planes
        .as_ref()
        .expect("a luma-chroma fit reports its planes");
    let names: Vec<&str> = planes.iter().map(|p| p.plane.as_str()).collect();
    assert_eq!(names, ["luma", "chroma-rb", "chroma-gm"]);
    assert_eq!(planes.iter().map(|p| p.nonzeros).sum::<usize>(), r.nonzeros);
    assert_eq!(r.nonzeros, 400);
    assert!(planes.iter().all(|p| p.nonzeros >= 1 && p.iterations == 30));
    assert_eq!(planes[0].neurons, 8, "luma takes -m");
    assert!(planes[1..].iter().all(|p| p.neurons <= 8));
    assert!(r.psnr > 25.0, "smooth colour image PSNR {}", r.psnr);
    // Both yardsticks: the channels' DCT and the DCT in the planes, per plane too.
    assert!(r.dct_psnr.is_some() && r.dct_planes_psnr.is_some(), "{r:?}");
    assert!(planes.iter().all(|p| p.dct_psnr.is_some()), "{planes:?}");
    let (w, h, c, _) = png(&dir.path().join("c/reconstruction.png"));
    assert_eq!((w, h, c), (16, 12, 3));
    // A finished fit leaves only its outputs.
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["model.safetensors", "reconstruction.png", "report.json"]
    );
    // The model file renders the reconstruction exactly, and at any size.
    assert_renders_its_reconstruction(dir.path(), "c");
    let out = spinr(
        dir.path(),
        &[
            "render",
            "c/model.safetensors",
            "--width",
            "32",
            "--height",
            "24",
            "--out",
            "c2.png",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (w, h, c, _) = png(&dir.path().join("c2.png"));
    assert_eq!((w, h, c), (32, 24, 3));

    fit("axis", &["--colour", "channel-axis"]);
    let r = read_report(&dir.path().join("axis"));
    assert_eq!(r.colour.as_deref(), Some("channel-axis"));
    assert!(r.planes.is_none());
    assert!(
        r.dct_planes_psnr.is_none(),
        "the channel axis has no planes"
    );
    assert_eq!(r.sigma.len(), 3);
    assert_eq!(r.sigma[2], 0.05);
    assert!(r.psnr > 25.0, "smooth colour image PSNR {}", r.psnr);
    // IMP is the paper's baseline: the channel axis, and luma-chroma is refused by name.
    let out = spinr(
        dir.path(),
        &[
            "fit",
            "c16.png",
            "--method",
            "imp",
            "--colour",
            "luma-chroma",
            "--out",
            "imp",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--colour"), "{}", stderr(&out));
}

/// Above 8192 samples IHT's minibatches grow from n/64 (at least 256) to n/4 by default;
/// `--batch-size A..B` sets both ends, and a shrinking range is refused naming the flag.
#[test]
fn minibatches_grow_by_default_and_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let cam = common::asset("camera.png");
    let cam = cam.to_str().unwrap();
    let fit = |extra: &[&str], out: &str| {
        let mut args = vec![
            "fit", cam, "--resize", "96", "-m", "8", "-s", "60", "-d", "32", "--iters", "3",
            "--out", out,
        ];
        args.extend_from_slice(extra);
        spinr(dir.path(), &args)
    };
    // 96² = 9216 samples: 9216/64 = 144, raised to 256; 9216/4 = 2304.
    let out = fit(&[], "auto");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("minibatches growing from 256 to 2304"),
        "{}",
        stderr(&out)
    );
    let r = read_report(&dir.path().join("auto"));
    assert_eq!((r.batch_size, r.batch_size_end), (Some(256), Some(2304)));
    let out = fit(&["--batch-size", "300..1200"], "range");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_report(&dir.path().join("range"));
    assert_eq!((r.batch_size, r.batch_size_end), (Some(300), Some(1200)));
    // A fixed size stays fixed.
    let out = fit(&["--batch-size", "500"], "fixed");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_report(&dir.path().join("fixed"));
    assert_eq!((r.batch_size, r.batch_size_end), (Some(500), Some(500)));
    for (bad, what) in [("900..300", "must not exceed"), ("0..300", "positive")] {
        let out = fit(&["--batch-size", bad], "bad");
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains("--batch-size") && e.contains(what), "{bad}: {e}");
    }
    let out = fit(&["--method", "imp", "--batch-size", "300..900"], "imp");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--batch-size"), "{}", stderr(&out));
}

#[test]
fn unreadable_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    std::fs::write(dir.path().join("junk.png"), b"this is not an image").unwrap();
    let mut png_bytes = Vec::new();
    image::GrayImage::new(8, 8)
        .write_to(
            &mut std::io::Cursor::new(&mut png_bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    std::fs::write(
        dir.path().join("cut.png"),
        &png_bytes[..png_bytes.len() / 2],
    )
    .unwrap();
    for (file, what) in [
        ("empty.png", "empty"),
        ("junk.png", "junk.png"),
        ("cut.png", "cut.png"),
        ("missing.png", "missing.png"),
    ] {
        let out = spinr(dir.path(), &["fit", file]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(file) && e.contains(what), "{file}: {e}");
        assert!(!dir
            .path()
            .join(file.replace(".png", ".spinr-out/model.safetensors"))
            .exists());
    }
    let out = spinr(
        dir.path(),
        &["fit", mnist().to_str().unwrap(), "--index", "10000"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--index"), "{}", stderr(&out));
}

/// A size out of range names the flag that fixes it: a zero `-m` or `-d` is not an `s` out
/// of range, though it leaves `s` no room (gray and colour fits plan apart).
#[test]
fn sizes_out_of_range_name_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    image::GrayImage::new(8, 8)
        .save(dir.path().join("gray.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(dir.path().join("rgb.png"))
        .unwrap();
    for file in ["gray.png", "rgb.png"] {
        for (args, flag) in [
            (&["-m", "0"][..], "--neurons"),
            (&["-m", "0", "-s", "0"][..], "--neurons"),
            (&["-d", "0"][..], "--features"),
            (&["-d", "7"][..], "--features"),
            (&["-s", "0"][..], "--nonzeros"),
            (&["-m", "2", "-d", "8", "-s", "17"][..], "--nonzeros"),
        ] {
            let mut a = vec!["fit", file, "--backend", "cpu"];
            a.extend_from_slice(args);
            let out = spinr(dir.path(), &a);
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{file} {args:?}: {e}");
            assert!(
                e.contains(&format!("invalid argument {flag}:")),
                "{file} {args:?}: {e}"
            );
            assert!(!dir.path().join(file.replace(".png", ".spinr-out")).exists());
        }
    }
}

#[test]
fn corrupt_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = spinr(
        dir.path(),
        &[
            "fit",
            mnist().to_str().unwrap(),
            "-m",
            "4",
            "-s",
            "60",
            "-d",
            "64",
            "--iters",
            "2",
            "--out",
            "o",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let good = std::fs::read(dir.path().join("o/model.safetensors")).unwrap();
    let mut flipped = good.clone();
    flipped[12] ^= 0x55; // inside the JSON header
    let mut bad_index = good.clone();
    // Make the first entry of the indices tensor huge (its offsets are in the JSON header).
    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&good[8..8 + header]).unwrap();
    let start = 8 + header + meta["indices"]["data_offsets"][0].as_u64().unwrap() as usize;
    bad_index[start..start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", Vec::new(), "empty"),
        (
            "half.safetensors",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "short.safetensors",
            good[..good.len() - 1].to_vec(),
            "truncated",
        ),
        ("flipped.safetensors", flipped, "corrupt"),
        ("index.safetensors", bad_index, "out of range"),
    ];
    for (name, bytes, what) in cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let out = spinr(dir.path(), &["render", name, "--out", "x.png"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(name) && e.contains(what), "{name}: {e}");
        assert!(!dir.path().join("x.png").exists());
    }
    let out = spinr(
        dir.path(),
        &["render", "nothing.safetensors", "--out", "x.png"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing.safetensors"));
}

/// Ctrl-C stops the fit after the current epoch and still writes a complete model and report.
#[cfg(unix)]
#[test]
fn an_interrupted_fit_saves_the_best_model() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let child = common::command(dir.path())
        .args([
            "fit",
            mnist().to_str().unwrap(),
            "--index",
            "10",
            "-m",
            "10",
            "-s",
            "300",
            "-d",
            "256",
            "--iters",
            "1000000",
            "--out",
            "o",
        ])
        .env("SPINR_BACKEND", "cpu")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // report.json appears after the first epoch, so the handler is installed by then.
    let report = dir.path().join("o/report.json");
    let start = Instant::now();
    while !report.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no report.json after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let r = read_report(&dir.path().join("o"));
    assert_eq!(r.status, "stopped");
    assert!(r.stopped);
    assert!(r.iterations >= 1 && r.iterations < 1_000_000);
    let model =
        spinr::model::load(&dir.path().join("o/model.safetensors")).expect("complete model");
    // A sixth of the nonzeros are DCT terms, added when the fit stops as when it finishes.
    assert_eq!((model.w.len(), model.dct.len()), (250, 50));
    assert_eq!(
        r.model_bytes,
        Some(
            std::fs::metadata(dir.path().join("o/model.safetensors"))
                .unwrap()
                .len()
        )
    );
    let (w, h, _, _) = png(&dir.path().join("o/reconstruction.png"));
    assert_eq!((w, h), (28, 28));
}

#[test]
fn sizes_beyond_the_pixel_limit_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let camera = common::asset("camera.png");
    let out = common::spinr_in(
        tmp.path(),
        &[
            "fit",
            camera.to_str().unwrap(),
            "--resize",
            "100000",
            "--backend",
            "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--resize") && err.contains("100000×100000"),
        "{err}"
    );
    // A model to render far too large.
    let digits = common::mnist();
    let out = common::spinr_in(
        tmp.path(),
        &[
            "fit",
            digits.to_str().unwrap(),
            "--index",
            "3",
            "-s",
            "20",
            "--iters",
            "1",
            "--backend",
            "cpu",
            "--out",
            "m",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let model = tmp.path().join("m/model.safetensors");
    let out = common::spinr_in(
        tmp.path(),
        &[
            "render",
            model.to_str().unwrap(),
            "--width",
            "100000",
            "--height",
            "100000",
            "--out",
            "big.png",
            "--backend",
            "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--width"), "{}", stderr(&out));
    assert!(!tmp.path().join("big.png").exists());
}

/// At the defaults (unit coordinates, spinr's variant) σ is read off the image: a fine
/// texture gets higher frequencies than a smooth image, and both are announced; an explicit
/// `--sigma` and the paper's variant keep theirs. (`s` = 6: the few terms that carry each
/// image; a much larger `s` would reach into their 8-bit rounding noise.)
#[test]
fn sigma_is_read_off_the_image_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, cycles: f32| {
        let src = image::ImageBuffer::from_fn(48, 48, |x, y| {
            let t = std::f32::consts::TAU * cycles / 48.0;
            let v = 0.5 + 0.25 * (t * x as f32).cos() + 0.2 * (t * 0.7 * y as f32).sin();
            image::Luma([(v * 255.0).round() as u8])
        });
        src.save(dir.path().join(name)).unwrap();
    };
    save("smooth.png", 2.0);
    save("fine.png", 9.0);
    let fit = |img: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "fit", img, "-m", "4", "-s", "6", "-d", "32", "--iters", "2", "--out", out,
        ];
        args.extend_from_slice(extra);
        let o = spinr(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        (read_report(&dir.path().join(out)).sigma, stderr(&o))
    };
    let (smooth, said) = fit("smooth.png", "a", &[]);
    assert!(said.contains(", read off the image)"), "{said}");
    let (fine, _) = fit("fine.png", "b", &[]);
    assert_eq!(smooth[0], smooth[1]);
    assert!(
        fine[0] > 2.0 * smooth[0],
        "smooth {smooth:?}, fine {fine:?}"
    );
    // At most a third of the longer side.
    assert!(fine[0] <= 16.0, "{fine:?}");
    let (given, said) = fit("fine.png", "c", &["--sigma", "7"]);
    assert_eq!(given, vec![7.0, 7.0]);
    assert!(!said.contains("read off"), "{said}");
    let (paper, _) = fit("fine.png", "d", &["--variant", "paper"]);
    assert_ne!(paper, fine);
}

/// Without `-m`, spinr's IHT fits take one neuron per 100 nonzeros within [50, 100]; IMP, the
/// paper's variant and an explicit `-m` keep theirs.
#[test]
fn neurons_follow_the_nonzeros_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let src = image::ImageBuffer::from_fn(12, 10, |x, y| image::Luma([(x * 20 + y * 3) as u8]));
    src.save(dir.path().join("tiny.png")).unwrap();
    let cases: [(&[&str], usize); 8] = [
        (&["-s", "3000"], 50),
        (&["-s", "5000"], 50),
        (&["-s", "7001"], 71),
        (&["-s", "10000"], 100),
        (&["-s", "20000"], 100),
        (&["-s", "10000", "--method", "imp"], 50),
        (&["-s", "10000", "--variant", "paper"], 50),
        (&["-s", "10000", "-m", "70"], 70),
    ];
    for (k, (extra, want)) in cases.into_iter().enumerate() {
        let out = format!("o{k}");
        let mut args = vec![
            "fit",
            "tiny.png",
            "--iters",
            "1",
            "--out",
            &out,
            "--backend",
            "cpu",
        ];
        args.extend_from_slice(extra);
        let o = spinr(dir.path(), &args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let got = read_report(&dir.path().join(&out)).neurons;
        assert_eq!(got, want, "{extra:?}");
        // The start-up line says when the rule moved m.
        let said = stderr(&o).contains(&format!("m={want} (one per 100 nonzeros)"));
        assert_eq!(
            said,
            want != 50 && !extra.contains(&"-m"),
            "{extra:?}: {}",
            stderr(&o)
        );
    }
}

/// One epoch of the camera at 96² (9216 samples, so minibatches) with 100 neurons of 32
/// features in `dir`, no polish, plus `extra`, into `out`.
/// (The network alone: the thresholds these fits test follow the network's own `s`.)
fn one_epoch_of_the_camera(dir: &Path, extra: &[&str], out: &str) -> Output {
    let base = [
        "-m",
        "100",
        "--iters",
        "1",
        "--polish",
        "0",
        "--dct-share",
        "0",
    ];
    the_camera_at_96(dir, &[&base[..], extra].concat(), out)
}

/// `spinr fit` of the camera at 96² (9216 samples: minibatches) with 32 features and `args`.
fn the_camera_at_96(dir: &Path, args: &[&str], out: &str) -> Output {
    let cam = common::asset("camera.png");
    let mut all = vec![
        "fit",
        cam.to_str().unwrap(),
        "--resize",
        "96",
        "-d",
        "32",
        "--out",
        out,
    ];
    all.extend_from_slice(args);
    spinr(dir, &all)
}

/// spinr's IHT fits give a sixth of `s` to DCT terms of what the network leaves: the report
/// and the start-up line say how many, the model file holds them and renders the
/// reconstruction exactly, and the network is the fit of the rest of `s` alone, so the terms
/// add to its PSNR. `--dct-share 0` fits the network alone; IMP, pixel coordinates and a
/// share outside [0, 1) refuse a share, naming the flag.
#[test]
fn a_sixth_of_the_nonzeros_are_dct_terms_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |extra: &[&str], out: &str| {
        let base = ["-m", "20", "--iters", "3"];
        the_camera_at_96(dir.path(), &[&base[..], extra].concat(), out)
    };
    let o = fit(&["-s", "600"], "terms");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("s=600 (500 weights + 100 DCT terms)"),
        "{}",
        stderr(&o)
    );
    let with = read_report(&dir.path().join("terms"));
    assert_eq!((with.nonzeros, with.dct_terms), (600, 100));
    let o = fit(&["-s", "500", "--dct-share", "0"], "alone");
    assert!(o.status.success(), "{}", stderr(&o));
    let alone = read_report(&dir.path().join("alone"));
    assert_eq!((alone.nonzeros, alone.dct_terms), (500, 0));
    assert!(
        with.psnr > alone.psnr + 0.1,
        "the terms add to the same network: {} vs {} dB",
        with.psnr,
        alone.psnr
    );
    assert_renders_its_reconstruction(dir.path(), "terms");
    for (extra, out) in [
        (&["--dct-share", "1"][..], "one"),
        (&["--dct-share=-0.5"][..], "negative"),
        (&["--dct-share", "0.2", "--coords", "pixel"][..], "pixel"),
        (&["--dct-share", "0.2", "--method", "imp"][..], "imp"),
    ] {
        let o = fit(&[&["-s", "600"][..], extra].concat(), out);
        assert_eq!(o.status.code(), Some(2), "{out}: {}", stderr(&o));
        assert!(stderr(&o).contains("--dct-share"), "{out}: {}", stderr(&o));
    }
    // Pixel coordinates (the digit grid) fit the network alone by default.
    let o = fit(&["-s", "600", "--coords", "pixel"], "pixel-default");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_report(&dir.path().join("pixel-default")).dct_terms, 0);
}

/// Momentum is on by default for spinr's minibatch fits from s = 3000 (β = 0.3), off below
/// that, off full batch and in the paper's variant; `--momentum` sets it and a β outside
/// [0, 1) is refused naming the flag.
#[test]
fn momentum_defaults_follow_the_batches_and_s() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |extra: &[&str], out: &str| one_epoch_of_the_camera(dir.path(), extra, out);
    for (extra, out, want) in [
        (&["-s", "3000"][..], "big", 0.3),
        (&["-s", "2999"][..], "small", 0.0),
        (&["-s", "3000", "--batch-size", "full"][..], "full", 0.0),
        (&["-s", "3000", "--variant", "paper"][..], "paper", 0.0),
        (&["-s", "1000", "--momentum", "0.2"][..], "asked", 0.2),
    ] {
        let o = fit(extra, out);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        assert_eq!(read_report(&dir.path().join(out)).momentum, want, "{out}");
    }
    let o = fit(&["-s", "3000", "--momentum", "1"], "bad");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--momentum"), "{}", stderr(&o));
}

/// Below s = 3000 spinr's minibatch fits over-select: twice `s` candidates per update, two
/// refinement steps on each side of the prune (the start-up line says so); from s = 3000, full
/// batch and in the paper's variant plain IHT (1). `--candidates` sets it (and keeps the
/// default refinement steps of its kind), a multiple below 1 or not finite is refused naming
/// the flag, and a pool beyond `m·d` is clamped to it.
#[test]
fn candidates_default_follow_the_batches_and_s() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |extra: &[&str], out: &str| one_epoch_of_the_camera(dir.path(), extra, out);
    for (extra, out, want, inner) in [
        (&["-s", "2999"][..], "small", 2.0, 2),
        (&["-s", "3000"][..], "big", 1.0, 3),
        (&["-s", "1000", "--batch-size", "full"][..], "full", 1.0, 10),
        (&["-s", "1000", "--variant", "paper"][..], "paper", 1.0, 10),
        (&["-s", "3000", "--candidates", "1.5"][..], "asked", 1.5, 2),
        (&["-s", "1000", "--candidates", "1"][..], "plain", 1.0, 3),
        (
            &["-s", "1000", "--candidates", "2", "--inner", "4"][..],
            "inner",
            2.0,
            4,
        ),
        // 2 × 2000 candidates, clamped to m·d = 3200.
        (&["-s", "2000"][..], "clamped", 2.0, 2),
    ] {
        let o = fit(extra, out);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        let r = read_report(&dir.path().join(out));
        assert_eq!((r.candidates, r.inner), (want, inner), "{out}");
        let said = stderr(&o).contains("candidates per update");
        assert_eq!(
            said,
            want > 1.0 && r.batch_size.is_some(),
            "{out}: {}",
            stderr(&o)
        );
    }
    assert!(stderr(&fit(&["-s", "1000"], "said")).contains("2000 candidates per update"));
    assert!(stderr(&fit(&["-s", "2000"], "said2")).contains("3200 candidates per update"));
    for bad in ["0.5", "NaN", "inf"] {
        let o = fit(&["-s", "1000", "--candidates", bad], "bad");
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("--candidates"), "{}", stderr(&o));
    }
    // IMP has no IHT updates: its flags are refused, not ignored (the helper passes --polish).
    let o = fit(
        &["-s", "1000", "--method", "imp", "--candidates", "2"],
        "imp",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for said in ["--method", "--polish, --candidates", "--method iht"] {
        assert!(stderr(&o).contains(said), "{said}: {}", stderr(&o));
    }
}

/// spinr's minibatch image fits below s = 3000 grow their support from half of `s` to `s` over
/// the first 15% of the epochs; from s = 3000, full batch, the paper's variant and
/// `--grow-from 1` keep `s` from the start. The start-up line says so, the report records it, the model ends with `s`
/// nonzeros, and shares outside (0, 1] or with IMP are refused naming the flag.
#[test]
fn the_support_grows_by_default_in_minibatch_fits() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |extra: &[&str], out: &str| {
        let base = ["-m", "20", "-s", "200", "--iters", "20", "--dct-share", "0"];
        the_camera_at_96(dir.path(), &[&base[..], extra].concat(), out)
    };
    for (extra, out, want) in [
        (&[][..], "grows", 0.5),
        (&["--batch-size", "full"][..], "full", 1.0),
        (&["--variant", "paper"][..], "paper", 1.0),
        (&["--grow-from", "1"][..], "whole", 1.0),
        (&["--grow-from", "0.25"][..], "quarter", 0.25),
    ] {
        let o = fit(extra, out);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        let r = read_report(&dir.path().join(out));
        assert_eq!(r.grow_from, want, "{out}");
        // 20 epochs: the ramp is 3 epochs long.
        let said = format!(
            "the support growing from {} to 200 nonzeros in 3 epochs",
            (200.0 * want).round()
        );
        assert_eq!(
            stderr(&o).contains(&said),
            want < 1.0,
            "{out}: {}",
            stderr(&o)
        );
        let model = spinr::model::load(&dir.path().join(out).join("model.safetensors")).unwrap();
        assert_eq!(model.w.len(), 200, "{out}");
    }
    for bad in ["0", "1.5", "NaN"] {
        let o = fit(&["--grow-from", bad], "bad");
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("--grow-from"), "{}", stderr(&o));
    }
    let o = fit(&["--method", "imp", "--grow-from", "0.5"], "imp");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--grow-from"), "{}", stderr(&o));
    // The threshold is momentum's: from s = 3000 the support is whole from the start.
    for (s, want) in [("2999", 0.5), ("3000", 1.0)] {
        let out = format!("s{s}");
        let o = one_epoch_of_the_camera(dir.path(), &["-s", s], &out);
        assert!(o.status.success(), "{s}: {}", stderr(&o));
        assert_eq!(read_report(&dir.path().join(&out)).grow_from, want, "{s}");
    }
}

/// Above 128² (n/64 above the 256 floor) with at least 8 samples per nonzero, spinr's
/// automatic first batches are n/256 samples (at least 256) instead of n/64; explicit sizes
/// and the paper's variant keep theirs.
#[test]
fn first_batches_are_fine_with_many_samples_per_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    // 136² = 18496 samples: n/64 = 289, n/256 = 72 (raised to 256), n/4 = 4624; s = 1000 is
    // 18.5 samples per nonzero, s = 3000 only 6.2.
    let fit = |size: &str, extra: &[&str], out: &str| {
        let cam = common::asset("camera.png");
        let mut all = vec![
            "fit",
            cam.to_str().unwrap(),
            "--resize",
            size,
            "-d",
            "32",
            "-m",
            "100",
            "--iters",
            "1",
            "--polish",
            "0",
            "--out",
            out,
        ];
        all.extend_from_slice(extra);
        spinr(dir.path(), &all)
    };
    for (size, extra, out, batch) in [
        ("136", &["-s", "1000"][..], "fine", Some(256)),
        ("136", &["-s", "3000"][..], "coarse", Some(289)),
        ("96", &["-s", "1000"][..], "floor", Some(256)),
        (
            "136",
            &["-s", "1000", "--batch-size", "500..4000"][..],
            "given",
            Some(500),
        ),
        (
            "136",
            &["-s", "1000", "--variant", "paper"][..],
            "paper",
            None,
        ),
    ] {
        let o = fit(size, extra, out);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        let r = read_report(&dir.path().join(out));
        assert_eq!(r.batch_size, batch, "{out}");
        if out == "fine" {
            let said = "minibatches growing from 256 to 4624";
            assert!(stderr(&o).contains(said), "{}", stderr(&o));
        }
    }
}

/// The frequencies come from the image's spectrum for spinr's IHT with unit coordinates, and
/// are saved in the model, whose render is the fit's reconstruction; `--frequencies gaussian`,
/// the paper's variant, pixel coordinates and IMP keep the seed's Gaussian draw.
#[test]
fn frequencies_default_to_the_spectrum_and_travel_in_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let cam = common::asset("camera.png");
    let cam = cam.to_str().unwrap();
    let fit = |extra: &[&str], out: &str| {
        let mut args = vec![
            "fit", cam, "--resize", "40", "-m", "8", "-d", "64", "-s", "300", "--iters", "3",
            "--out", out,
        ];
        args.extend_from_slice(extra);
        spinr(dir.path(), &args)
    };
    for (extra, out, want) in [
        (&[][..], "spectrum", "spectrum"),
        (&["--frequencies", "gaussian"][..], "gaussian", "gaussian"),
        (&["--variant", "paper"][..], "paper", "gaussian"),
        (&["--coords", "pixel"][..], "pixel", "gaussian"),
        (&["--method", "imp"][..], "imp", "gaussian"),
        (
            &["--coords", "pixel", "--frequencies", "spectrum"][..],
            "pixel-spectrum",
            "spectrum",
        ),
    ] {
        let o = fit(extra, out);
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        let report = read_report(&dir.path().join(out));
        assert_eq!(report.frequencies, want, "{out}");
        let model = spinr::model::load(&dir.path().join(out).join("model.safetensors")).unwrap();
        let rows = model.spec.image_frequencies.len() / 2;
        if want == "spectrum" {
            // The spectrum's share of the 31 rows beside the constant feature's (at least
            // half of them), each a frequency of a DCT term: whole or half cycles per image
            // (unit coordinates).
            assert_eq!(rows, spinr::inr::spectrum::spectrum_rows(64, true), "{out}");
            assert!(rows >= 16, "{rows}");
            if out == "spectrum" {
                assert!(model
                    .spec
                    .image_frequencies
                    .iter()
                    .all(|f| (2.0 * f).fract() == 0.0));
            }
        } else {
            assert_eq!(rows, 0, "{out}");
        }
    }
    // The saved model renders the reconstruction, and the two draws fit differently.
    let o = spinr(
        dir.path(),
        &[
            "render",
            "spectrum/model.safetensors",
            "--out",
            "render.png",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = image::open(dir.path().join("render.png"))
        .unwrap()
        .to_luma8();
    let b = image::open(dir.path().join("spectrum/reconstruction.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(a, b);
    let g = read_report(&dir.path().join("gaussian")).psnr;
    assert_ne!(read_report(&dir.path().join("spectrum")).psnr, g);
}

/// `--time-budget` re-plans the epochs to end near the budget: a 128² fit whose default 30
/// epochs take seconds stops far earlier under a short budget, and the report says what ran.
/// A colour fit shares the budget between its planes. Bad budgets, and a budget beside
/// `--iters` or for IMP, are refused naming the flag.
#[test]
fn a_time_budget_plans_the_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let cam = common::asset("camera.png");
    let cam = cam.to_str().unwrap();
    let fit = |extra: &[&str], out: &str| {
        let mut args = vec!["fit", cam, "--resize", "128", "--out", out];
        args.extend_from_slice(extra);
        spinr(dir.path(), &args)
    };
    let o = fit(&[], "default");
    assert!(o.status.success(), "{}", stderr(&o));
    let full = read_report(&dir.path().join("default"));
    assert_eq!(
        (full.iters, full.iterations, full.time_budget),
        (30, 30, None)
    );
    // A tenth of the default's time: far fewer epochs, at least one.
    let budget = (full.seconds / 10.0).max(0.01);
    let o = fit(&["--time-budget", &budget.to_string()], "short");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("time budget"), "{}", stderr(&o));
    let short = read_report(&dir.path().join("short"));
    assert_eq!(short.time_budget, Some(budget));
    assert_eq!(short.iters, short.iterations);
    assert!(
        short.iterations >= 1 && short.iterations < 20,
        "{} epochs in a budget of {budget} s (the default's 30 took {} s)",
        short.iterations,
        full.seconds
    );
    assert!(short.psnr > 10.0, "{}", short.psnr);
    // A budget the first epoch overruns: that epoch alone, no polish (a network of 3000
    // weights has no growing support, so its first epoch is that of a one-epoch fit, to the
    // bit).
    for (extra, out) in [
        (&["--time-budget", "0.001", "--dct-share", "0"][..], "tiny"),
        (
            &["--iters", "1", "--polish", "0", "--dct-share", "0"][..],
            "one",
        ),
    ] {
        let o = fit(extra, out);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (tiny, one) = (
        read_report(&dir.path().join("tiny")),
        read_report(&dir.path().join("one")),
    );
    assert_eq!((tiny.iterations, tiny.psnr), (1, one.psnr));
    // Colour: every plane runs, and the planes' epochs are reported.
    let chelsea = common::asset("photos/chelsea.png");
    let o = spinr(
        dir.path(),
        &[
            "fit",
            chelsea.to_str().unwrap(),
            "--resize",
            "48",
            "--time-budget",
            "1.5",
            "--out",
            "colour",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c = read_report(&dir.path().join("colour"));
    let planes = c.planes.expect("planes");
    assert!(planes.iter().all(|p| p.iterations >= 1), "{planes:?}");
    assert_eq!(c.iters, planes[0].iterations);
    assert_eq!(
        c.iterations,
        planes.iter().map(|p| p.iterations).sum::<usize>()
    );
    assert_eq!(c.time_budget, Some(1.5));
    for (extra, flag) in [
        (&["--time-budget", "0"][..], "--time-budget"),
        (&["--time-budget=-1"][..], "--time-budget"),
        (&["--time-budget", "inf"][..], "--time-budget"),
        (&["--time-budget", "5", "--iters", "3"][..], "--iters"),
        (
            &["--time-budget", "5", "--method", "imp"][..],
            "--time-budget",
        ),
    ] {
        let o = fit(extra, "bad");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{extra:?}: {}", stderr(&o));
    }
}
