//! The memory estimates behind `--max-memory` against what the real binary uses: each fit and
//! render is run as a child process and its peak resident memory read back (`wait4`); the
//! estimate must cover it (an estimate below the real use would let a fit through that then
//! fails) without overstating it more than 2.5×. And the refusals: over budget, exit 2 naming
//! the size and the fix, before anything is written.

#![cfg(target_os = "linux")]

use spinr::inr::fit::FitOptions;
use spinr::inr::image as img;
use std::path::Path;
use std::process::Command;

mod common;

/// Runs spinr in `dir` and returns its peak resident memory in bytes (asserting success).
// `wait4` reaps the child (std's `wait` would not give its rusage).
#[allow(clippy::zombie_processes)]
fn peak_rss(dir: &Path, args: &[&str]) -> u64 {
    let child = common::command(dir)
        .args(args)
        .env("SPINR_BACKEND", "cpu")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "spinr {args:?} failed ({status})"
    );
    usage.ru_maxrss as u64 * 1024
}

fn within(what: &str, estimate: u64, measured: u64) {
    eprintln!(
        "{what}: estimate {} MiB, measured peak {} MiB ({:.2}×)",
        estimate >> 20,
        measured >> 20,
        estimate as f64 / measured as f64
    );
    assert!(
        estimate >= measured,
        "{what}: the estimate does not cover the use"
    );
    assert!(
        (estimate as f64) < 2.5 * measured as f64,
        "{what}: the estimate is far above the use"
    );
}

#[test]
fn fit_and_render_estimates_cover_the_measured_peak() {
    let dir = tempfile::tempdir().unwrap();
    let camera = common::asset("camera.png");
    let image = img::load(&camera, None).unwrap();
    for side in [128, 384] {
        let resized = image.resized(side, side);
        let plan = FitOptions {
            iters: 1,
            ..FitOptions::default()
        }
        .plan(&resized)
        .unwrap();
        let est = plan
            .host_memory(spinr::backend::DEFAULT_FEATURE_CACHE)
            .total();
        let side_s = side.to_string();
        let rss = peak_rss(
            dir.path(),
            &[
                "fit",
                camera.to_str().unwrap(),
                "--resize",
                &side_s,
                "--iters",
                "1",
                "--out",
                "o",
                "--force",
            ],
        );
        within(&format!("fit {side}²"), est, rss);
    }
    let model = spinr::model::load(&dir.path().join("o/model.safetensors")).unwrap();
    for side in [256, 1500] {
        let est = model.render_memory(side, side).total();
        let side_s = side.to_string();
        let rss = peak_rss(
            dir.path(),
            &[
                "render",
                "o/model.safetensors",
                "--width",
                &side_s,
                "--height",
                &side_s,
                "--out",
                "r.png",
            ],
        );
        within(&format!("render {side}²"), est, rss);
    }
}

#[test]
fn fits_and_renders_over_budget_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let camera = common::asset("camera.png");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_spinr"))
            .current_dir(dir.path())
            .args(args)
            .env("SPINR_BACKEND", "cpu")
            .output()
            .unwrap()
    };
    let o = run(&[
        "fit",
        camera.to_str().unwrap(),
        "--max-memory",
        "50M",
        "--out",
        "o",
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not enough memory") && err.contains("50.0 MiB") && err.contains("--resize"),
        "{err}"
    );
    assert!(!dir.path().join("o").exists());
    // A budget that holds the fit but not its feature cache: the fit runs without it.
    let o = run(&[
        "fit",
        camera.to_str().unwrap(),
        "--resize",
        "96",
        "--iters",
        "2",
        "--max-memory",
        "100M",
        "--out",
        "o",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = run(&[
        "render",
        "o/model.safetensors",
        "--width",
        "8000",
        "--max-memory",
        "500M",
        "--out",
        "big.png",
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--width") && err.contains("500 MiB"), "{err}");
    assert!(!dir.path().join("big.png").exists());
}
