//! `spinr render --backend gpu` draws the same pixels as the CPU. Needs a GPU adapter (fails,
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
