//! End-to-end tests of `spinr sweep`: the real binary on sweep folders written by hand (the
//! file formats are a contract), and its refusals of bad input.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_spinr");

fn spinr(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env("SPINR_BACKEND", "cpu");
    for v in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_STEP",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run spinr")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn manifest(image: &str) -> String {
    format!(
        r#"{{
  "format": "spinr-sweep/1",
  "task": "inr",
  "methods": [
    "iht",
    "imp"
  ],
  "neurons": [
    10
  ],
  "nonzeros": [
    20,
    100
  ],
  "seeds": [
    0,
    1
  ],
  "options": {{
    "image": "{image}"
  }},
  "spinr_version": "{}"
}}
"#,
        env!("CARGO_PKG_VERSION")
    )
}

const HEADER: &str = "method,neurons,nonzeros,seed,psnr,seconds,note\n";

/// Rows of each cell, as a run writes them; shard 0/2 has the groups of seed 0 (iht, imp),
/// shard 1/2 those of seed 1.
fn row(method: &str, s: usize, seed: u64) -> String {
    let psnr = 20.0 + s as f64 / 10.0 + seed as f64 + if method == "iht" { 3.25 } else { 0.0 };
    format!("{method},10,{s},{seed},{psnr:?},1.5,\"a, \"\"b\"\"\"\n")
}

fn shard_csv(seed: u64) -> String {
    let mut t = HEADER.to_string();
    for method in ["iht", "imp"] {
        for s in [20, 100] {
            t += &row(method, s, seed);
        }
    }
    t
}

fn write_dir(dir: &Path, manifest: &str, csv: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("sweep.json"), manifest).unwrap();
    std::fs::write(dir.join("results.csv"), csv).unwrap();
}

#[test]
fn merge_joins_shard_folders_in_canonical_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_dir(
        &root.join("shard-0"),
        &manifest("camera.png"),
        &shard_csv(0),
    );
    write_dir(
        &root.join("shard-1"),
        &manifest("camera.png"),
        &shard_csv(1),
    );
    let out = spinr(
        root,
        &["sweep", "merge", "shard-1", "shard-0", "--out", "all"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("8 of 8 cells"),
        "{}",
        text(&out.stdout)
    );

    let mut want = HEADER.to_string();
    for method in ["iht", "imp"] {
        for seed in [0, 1] {
            for s in [20, 100] {
                want += &row(method, s, seed);
            }
        }
    }
    let got = std::fs::read_to_string(root.join("all/results.csv")).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        std::fs::read_to_string(root.join("all/sweep.json")).unwrap(),
        manifest("camera.png")
    );
    for f in [
        "heatmap-iht.png",
        "heatmap-imp.png",
        "heatmap-iht-minus-imp.png",
        "summary.md",
    ] {
        assert!(root.join("all").join(f).exists(), "{f}");
    }
    // iht m=10 s=20: seeds 0, 1 → 25.25, 26.25, median 25.75.
    let md = std::fs::read_to_string(root.join("all/summary.md")).unwrap();
    assert!(md.contains("| 10 | 25.75 (25.25 26.25) |"), "{md}");

    // One shard alone merges with a warning about the missing cells.
    let out = spinr(root, &["sweep", "merge", "shard-0", "--out", "half"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("4 cells are in none"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn merge_refuses_mismatched_or_conflicting_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_dir(&root.join("a"), &manifest("camera.png"), &shard_csv(0));
    write_dir(&root.join("b"), &manifest("other.png"), &shard_csv(1));
    let out = spinr(root, &["sweep", "merge", "a", "b", "--out", "m"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("different sweep") && err.contains("options.image"),
        "{err}"
    );
    assert!(!root.join("m/results.csv").exists());

    // The same cell in two folders with different values.
    let changed = shard_csv(0).replace("1.5,", "1.75,");
    write_dir(&root.join("c"), &manifest("camera.png"), &changed);
    let out = spinr(root, &["sweep", "merge", "a", "c", "--out", "m"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("iht m=10 s=20 seed=0") && err.contains("seconds"),
        "{err}"
    );

    // A malformed results.csv is named.
    write_dir(
        &root.join("d"),
        &manifest("camera.png"),
        "method,neurons\n\"iht,10\n",
    );
    let out = spinr(root, &["sweep", "merge", "a", "d", "--out", "m"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("d/results.csv"),
        "{}",
        text(&out.stderr)
    );
}

const GRID: [&str; 8] = [
    "sweep",
    "--task",
    "inr",
    "--neurons",
    "10,50",
    "--nonzeros",
    "20,100",
    "--out",
];

#[test]
fn a_bad_shard_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for (shard, says) in [("2/2", "0 to 1"), ("x/3", "not a shard"), ("1", "I/N")] {
        let mut args = GRID.to_vec();
        args.extend(["runs", "--shard", shard]);
        let out = spinr(tmp.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(2), "{shard}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("--shard") && err.contains(says),
            "{shard}: {err}"
        );
    }
    // A Slurm array task outside its array.
    let mut args = GRID.to_vec();
    args.push("runs");
    let env = [
        ("SLURM_ARRAY_TASK_ID", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    let out = spinr(tmp.path(), &args, &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--shard") && err.contains("Slurm"), "{err}");
    // A repeated grid value.
    let args = [
        "sweep",
        "--task",
        "inr",
        "--neurons",
        "10,10",
        "--nonzeros",
        "5",
        "--out",
        "runs",
    ];
    let out = spinr(tmp.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--neurons"),
        "{}",
        text(&out.stderr)
    );
    assert!(!tmp.path().join("runs").exists());
}
