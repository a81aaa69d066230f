//! `spinr fit --checkpoint-every` / `--resume` through the real binary: a fit interrupted twice
//! (SIGINT, then SIGTERM, as Slurm sends before a time limit) and resumed each time ends with
//! exactly the files of an uninterrupted run, for IHT and for IMP (which resumes at its last
//! round boundary); resumes of another fit, of a folder without a
//! checkpoint or of a damaged checkpoint are refused with exit code 2.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

mod common;

const CHECKPOINT: &str = "checkpoint.safetensors";

fn camera() -> String {
    common::asset("camera.png").display().to_string()
}

/// A CPU fit of a few seconds with minibatches, so that it pauses after every update.
fn fit_args(image: &str) -> Vec<String> {
    [
        "fit",
        image,
        "--resize",
        "64",
        "--iters",
        "30",
        "--batch-size",
        "1024",
        "--backend",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(dir: &Path, args: &[String]) -> Child {
    common::command(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start spinr")
}

/// Waits until `path` exists with contents other than `old`, then sends `signal`.
fn signal_after_checkpoint(child: &mut Child, path: &Path, old: Option<&[u8]>, signal: i32) {
    let t = Instant::now();
    loop {
        if let Ok(now) = std::fs::read(path) {
            if old != Some(&now[..]) {
                break;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the fit ended before it could be interrupted"
        );
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint came");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two fit folders hold the same model, reconstruction and report (minus `seconds`).
fn assert_same_fit(a: &Path, b: &Path) {
    for f in ["model.safetensors", "reconstruction.png"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(report(a), report(b));
}

/// The report without the one field that cannot repeat: wall time.
fn report(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    v.as_object_mut()
        .unwrap()
        .remove("seconds")
        .expect("seconds");
    v
}

fn run_in(dir: &Path, args: &[String]) -> std::process::Output {
    common::command(dir).args(args).output().expect("run spinr")
}

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_fit_interrupted_twice_and_resumed_ends_exactly_as_an_uninterrupted_one() {
    let image = camera();
    let whole = tempfile::tempdir().unwrap();
    let o = run_in(whole.path(), &with(fit_args(&image), &["--out", "out"]));
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!whole.path().join("out").join(CHECKPOINT).exists());

    let parts = tempfile::tempdir().unwrap();
    let out: PathBuf = parts.path().join("out");
    let ckpt = out.join(CHECKPOINT);
    // 1. SIGINT (Ctrl-C) soon after the first checkpoint.
    let mut c = start(
        parts.path(),
        &with(
            fit_args(&image),
            &["--out", "out", "--checkpoint-every", "0"],
        ),
    );
    signal_after_checkpoint(&mut c, &ckpt, None, libc::SIGINT);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("--resume out"), "{err}");
    let first = std::fs::read(&ckpt).unwrap();
    // The stopped run left its best model, reconstruction and report too.
    assert_eq!(report(&out)["stopped"], true);

    // 2. Resumed with the checkpoint's own options, then SIGTERM once it has moved on.
    let args: Vec<String> = ["fit", "--resume", "out", "--checkpoint-every", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut c = start(parts.path(), &args);
    signal_after_checkpoint(&mut c, &ckpt, Some(&first), libc::SIGTERM);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("resuming at epoch"), "{err}");
    assert_ne!(std::fs::read(&ckpt).unwrap(), first);

    // 3. Resumed again, this time with the image and flags repeated, to the end.
    let o = run_in(parts.path(), &with(fit_args(&image), &["--resume", "out"]));
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!ckpt.exists(), "a finished fit leaves no checkpoint");

    let w = whole.path().join("out");
    assert_same_fit(&w, &out);
    assert_eq!(report(&out)["stopped"], false);
}

/// A colour fit in luma and chroma planes stopped in its second plane: the stopped run's model
/// renders (the unfitted plane as its mean), and the resume reads the finished plane back and
/// ends with exactly the files of an uninterrupted run.
#[test]
fn a_luma_chroma_fit_stopped_in_a_later_plane_resumes_exactly() {
    let image = common::asset("photos/chelsea.png").display().to_string();
    let whole = tempfile::tempdir().unwrap();
    let o = run_in(whole.path(), &with(fit_args(&image), &["--out", "out"]));
    assert!(o.status.success(), "{}", common::stderr(&o));

    let parts = tempfile::tempdir().unwrap();
    let out: PathBuf = parts.path().join("out");
    let mut c = start(
        parts.path(),
        &with(
            fit_args(&image),
            &["--out", "out", "--checkpoint-every", "0"],
        ),
    );
    // Once the luma plane is done, the stop lands in the second plane.
    signal_after_checkpoint(
        &mut c,
        &out.join("plane-luma.safetensors"),
        None,
        libc::SIGINT,
    );
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("plane 2 of 3"), "{err}");
    let stopped = report(&out);
    assert_eq!(stopped["stopped"], true);
    assert_eq!(
        stopped["planes"][2]["iterations"], 0,
        "the last plane never ran"
    );
    let o = run_in(
        parts.path(),
        &["render", "out/model.safetensors", "--out", "stopped.png"].map(String::from),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));

    let o = run_in(parts.path(), &["fit", "--resume", "out"].map(String::from));
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("resuming at epoch"));
    for f in [
        CHECKPOINT,
        "plane-luma.safetensors",
        "plane-chroma-rb.safetensors",
    ] {
        assert!(!out.join(f).exists(), "a finished fit leaves no {f}");
    }
    let w = whole.path().join("out");
    for f in ["model.safetensors", "reconstruction.png"] {
        assert!(
            std::fs::read(w.join(f)).unwrap() == std::fs::read(out.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let without_seconds = |dir: &Path| {
        let mut v = report(dir);
        for p in v["planes"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("seconds");
        }
        v
    };
    assert_eq!(without_seconds(&w), without_seconds(&out));
}

#[test]
fn resumes_of_another_fit_or_without_a_checkpoint_are_refused() {
    let image = camera();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ckpt = out.join(CHECKPOINT);
    let mut c = start(
        dir.path(),
        &with(
            fit_args(&image),
            &["--out", "out", "--checkpoint-every", "0"],
        ),
    );
    signal_after_checkpoint(&mut c, &ckpt, None, libc::SIGINT);
    assert_eq!(finish(c).0, 130);
    let saved = std::fs::read(&ckpt).unwrap();

    let run = |more: &[&str]| run_in(dir.path(), &with(fit_args(&image), more));
    let refused = |o: &std::process::Output, needles: &[&str]| {
        let err = common::stderr(o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
    };
    // Other options: named, with both values.
    refused(
        &run(&["--resume", "out", "--neurons", "60"]),
        &["neurons: 50 in the checkpoint, 60 now"],
    );
    refused(&run(&["--resume", "out", "--seed", "3"]), &["seed: 0"]);
    // Other pixels (another size of the same file).
    let mut other = fit_args(&image);
    other[3] = "48".into();
    other.extend(["--resume".to_string(), "out".to_string()]);
    refused(
        &run_in(dir.path(), &other),
        &["height: 64 in the checkpoint, 48 now"],
    );
    // An IHT checkpoint is not an IMP run's.
    refused(
        &run(&["--resume", "out", "--method", "imp"]),
        &["method: \"iht\" in the checkpoint, \"imp\" now"],
    );
    // A folder without a checkpoint.
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    refused(&run(&["--resume", "empty"]), &["--resume", "no checkpoint"]);
    // --out elsewhere.
    refused(&run(&["--resume", "out", "--out", "x"]), &["--out"]);
    // A damaged checkpoint.
    std::fs::write(&ckpt, &saved[..saved.len() / 2]).unwrap();
    refused(&run(&["--resume", "out"]), &["cannot resume", "checkpoint"]);
    // A fresh fit into the stopped fit's folder needs --force, and the message offers --resume.
    std::fs::write(&ckpt, &saved).unwrap();
    refused(&run(&["--out", "out"]), &["--force", "--resume out"]);
    // The untouched checkpoint still resumes.
    let o = common::spinr_in(dir.path(), &["fit", "--resume", "out"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
}

#[test]
fn an_interrupted_imp_fit_resumes_from_its_last_round() {
    let image = camera();
    let args: Vec<String> = [
        "fit",
        &image,
        "--resize",
        "64",
        "--method",
        "imp",
        "--neurons",
        "20",
        "--nonzeros",
        "200",
        "--features",
        "64",
        "--iters",
        "60",
        "--backend",
        "cpu",
        "--out",
        "out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let whole = tempfile::tempdir().unwrap();
    let o = run_in(whole.path(), &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let parts = tempfile::tempdir().unwrap();
    let out = parts.path().join("out");
    let mut c = start(parts.path(), &args);
    signal_after_checkpoint(&mut c, &out.join(CHECKPOINT), None, libc::SIGTERM);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    let o = common::spinr_in(parts.path(), &["fit", "--resume", "out"]);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at round"), "{err}");
    let w = whole.path().join("out");
    assert_same_fit(&w, &out);
    assert!(!out.join(CHECKPOINT).exists());
}

/// `spinr plant --checkpoint FILE`: the same command resumes. IHT (scalar and vector outputs)
/// resumes at the update it stopped after, IMP at its last round boundary; all end with the uninterrupted report
/// (but for `seconds`, and for IHT `peak_device_bytes`: the resumed process never held the
/// random-gate masks of the first epochs).
#[test]
fn planted_runs_resume_with_the_same_command() {
    for (method, extra, drop_peak) in [
        (
            "iht",
            &["--samples", "20000", "--nonzeros", "200"][..],
            true,
        ),
        (
            "imp",
            &["--samples", "3000", "--nonzeros", "100"][..],
            false,
        ),
        // Vector outputs (the paper's Fig. 2): W, BEST and the carried step μ.
        (
            "iht",
            &["--outputs", "10", "--samples", "6000", "--nonzeros", "200"][..],
            false,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "plant",
            "--gates",
            "sequential",
            "--inputs",
            "200",
            "--neurons",
            "50",
            "--iters",
            "40",
            "--seed",
            "1",
            "--backend",
            "cpu",
            "--json",
            "--method",
            method,
        ]
        .iter()
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect();
        let whole = run_in(dir.path(), &args);
        assert!(whole.status.success(), "{}", common::stderr(&whole));
        args.extend(["--checkpoint", "c.st", "--checkpoint-every", "0"].map(String::from));
        let ckpt = dir.path().join("c.st");
        let mut c = start(dir.path(), &args);
        signal_after_checkpoint(&mut c, &ckpt, None, libc::SIGINT);
        let (code, err) = finish(c);
        assert_eq!(code, 130, "{method}: {err}");
        assert!(err.contains("rerun the same command"), "{err}");
        let rest = run_in(dir.path(), &args);
        let err = common::stderr(&rest);
        assert!(rest.status.success(), "{err}");
        assert!(err.contains("resuming from"), "{err}");
        assert!(!ckpt.exists());
        let strip = |o: &std::process::Output| {
            let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("seconds").expect("seconds");
            if drop_peak {
                m.remove("peak_device_bytes").expect("peak_device_bytes");
            }
            v
        };
        assert_eq!(strip(&whole), strip(&rest), "{method}");
    }
}

/// A fit whose GPU fails mid-run (a lost device, simulated after N device checks with
/// `SPINR_GPU_FAIL_AFTER`) exits 1 without a panic, leaves the best model of its last
/// checkpoint in `model.safetensors` and says how to go on; `--resume --backend cpu` then
/// finishes it. Needs a GPU adapter (lavapipe will do).
#[test]
fn a_fit_whose_gpu_fails_saves_its_best_model_and_resumes_on_the_cpu() {
    let _ = common::gpu_ctx();
    let image = camera();
    let dir = tempfile::tempdir().unwrap();
    let o = common::command(dir.path())
        .args([
            "fit",
            &image,
            "--resize",
            "16",
            "--neurons",
            "20",
            "--nonzeros",
            "300",
            "--features",
            "64",
            "--iters",
            "40",
            "--backend",
            "gpu",
            "--checkpoint-every",
            "0",
            "--out",
            "out",
        ])
        .env("SPINR_GPU_FAIL_AFTER", "300")
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("device was lost") && err.contains("the best model of the last checkpoint"),
        "{err}"
    );
    assert!(err.contains("--resume out"), "{err}");
    let out = dir.path().join("out");
    let model = spinr::model::load(&out.join("model.safetensors")).expect("a complete model");
    assert!(!model.w.is_empty());
    let o = common::spinr_in(dir.path(), &["fit", "--resume", "out", "--backend", "cpu"]);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at epoch"), "{err}");
    assert_eq!(report(&out)["iterations"], 40);
}
