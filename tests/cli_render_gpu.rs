//! `spinr render --backend gpu` draws the same pixels as the CPU (CI has lavapipe, a software
//! Vulkan adapter; without any adapter the test says so and passes).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spinr");

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run spinr")
}

#[test]
fn gpu_and_cpu_render_the_same_model_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist/images-idx3-ubyte.gz");
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
        let err = String::from_utf8_lossy(&out.stderr);
        if backend == "gpu" && err.contains("no GPU adapter") {
            eprintln!("skipped: no GPU adapter ({err})");
            return;
        }
        assert!(out.status.success(), "{backend}: {err}");
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
