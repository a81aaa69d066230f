//! `spinr render --backend gpu` draws the same pixels as the CPU, and a colour fit in planes
//! agrees between the backends. Needs a GPU adapter (fails,
//! never skips, without one: `apt-get install mesa-vulkan-drivers` gives lavapipe).

mod common;

use common::{mnist, spinr_in as run};

#[test]
fn gpu_and_cpu_render_the_same_model_alike() {
    // Fails here, with the install instructions, when there is no adapter.
    common::gpu_ctx();
    let dir = tempfile::tempdir().unwrap();
    let mnist = mnist();
    let out = run(
        dir.path(),
        &[
            "fit",
            mnist.to_str().unwrap(),
            "--index",
            "7",
            "-m",
            "6",
            "-s",
            "150",
            "-d",
            "64",
            "--iters",
            "5",
            "--backend",
            "cpu",
            "--out",
            "o",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for backend in ["cpu", "gpu"] {
        let file = format!("{backend}.png");
        let out = run(
            dir.path(),
            &[
                "render",
                "o/model.safetensors",
                "--width",
                "40",
                "--backend",
                backend,
                "--out",
                &file,
            ],
        );
        assert!(out.status.success(), "{backend}: {}", common::stderr(&out));
    }
    let cpu = image::open(dir.path().join("cpu.png"))
        .unwrap()
        .into_luma8();
    let gpu = image::open(dir.path().join("gpu.png"))
        .unwrap()
        .into_luma8();
    assert_eq!(cpu.dimensions(), (40, 40));
    assert_eq!(gpu.dimensions(), (40, 40));
    let worst = cpu
        .pixels()
        .zip(gpu.pixels())
        .map(|(a, b)| a.0[0].abs_diff(b.0[0]))
        .max()
        .unwrap();
    // f32 rounding differs between the backends; a level of 8-bit quantisation at most.
    assert!(worst <= 1, "GPU and CPU renders differ by {worst} levels");
    assert!(cpu.pixels().any(|p| p.0[0] > 50), "the render is blank");
}

/// A colour photo in luma and chroma planes fits to the same quality on both backends, and
/// its three-plane model renders alike on both.
#[test]
fn a_luma_chroma_colour_fit_agrees_between_backends() {
    common::gpu_ctx();
    let dir = tempfile::tempdir().unwrap();
    let photo = common::asset("photos/chelsea.png");
    let mut psnr = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = run(
            dir.path(),
            &[
                "fit",
                photo.to_str().unwrap(),
                "--resize",
                "32",
                "-s",
                "300",
                "-d",
                "64",
                "--iters",
                "5",
                "--backend",
                backend,
                "--json",
                "--out",
                backend,
            ],
        );
        assert!(out.status.success(), "{backend}: {}", common::stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["colour"], "luma-chroma");
        assert_eq!(r["backend"], backend);
        psnr.push(r["psnr"].as_f64().unwrap());
    }
    assert!(psnr[0] > 15.0, "{psnr:?}");
    assert!((psnr[0] - psnr[1]).abs() < 0.2, "cpu and gpu PSNR {psnr:?}");
    for backend in ["cpu", "gpu"] {
        let file = format!("{backend}.png");
        let out = run(
            dir.path(),
            &[
                "render",
                "cpu/model.safetensors",
                "--width",
                "48",
                "--backend",
                backend,
                "--out",
                &file,
            ],
        );
        assert!(out.status.success(), "{backend}: {}", common::stderr(&out));
    }
    let cpu = image::open(dir.path().join("cpu.png")).unwrap().into_rgb8();
    let gpu = image::open(dir.path().join("gpu.png")).unwrap().into_rgb8();
    assert_eq!(cpu.dimensions(), (48, 32));
    let worst = cpu
        .as_raw()
        .iter()
        .zip(gpu.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    // Three planes, each within a level, joined: at most a few levels apart.
    assert!(worst <= 3, "GPU and CPU renders differ by {worst} levels");
}
