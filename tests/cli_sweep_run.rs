//! `spinr sweep` running real cells through the binary: every method on a small planted grid
//! and a digit; an interrupted sweep resumes to exactly one row per cell; two shards merged
//! equal the unsharded run.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

/// A small planted grid: seconds on a CPU, every method, two groups per method.
const PLANT: &[&str] = &[
    "sweep",
    "--task",
    "plant",
    "--inputs",
    "10",
    "--samples",
    "300",
    "--neurons",
    "3,5",
    "--nonzeros",
    "4,8",
    "--methods",
    "iht,paper,imp",
    "--seeds",
    "0,1",
    "--iters",
    "20",
    "--backend",
    "cpu",
];

fn sweep(dir: &Path, extra: &[&str]) -> Output {
    let mut args = PLANT.to_vec();
    args.extend(extra);
    common::command(dir)
        .args(&args)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .expect("run spinr")
}

/// results.csv as rows of (column, value), without the wall-clock column.
fn rows(path: &Path) -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            // The values hold no commas except inside quoted lists, which plant rows lack.
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .filter(|(k, _)| k != "seconds")
                .collect()
        })
        .collect()
}

fn cells_of(rows: &[Vec<(String, String)>]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .take(4)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn every_method_runs_and_shards_merge_to_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = sweep(dir, &["--out", "all"]);
    assert!(all.status.success(), "{}", common::stderr(&all));
    let whole = rows(&dir.join("all/results.csv"));
    assert_eq!(whole.len(), 3 * 2 * 2 * 2, "one row per cell");
    let col = |r: &Vec<(String, String)>, k: &str| {
        r.iter()
            .find(|(c, _)| c == k)
            .unwrap_or_else(|| panic!("no column {k}"))
            .1
            .clone()
    };
    for r in &whole {
        let psnr: f64 = col(r, "test_psnr").parse().unwrap();
        assert!(psnr.is_finite(), "{r:?}");
        // IMP ends at or below s weights; IHT has exactly s.
        let s: usize = col(r, "nonzeros").parse().unwrap();
        let w: usize = col(r, "weights").parse().unwrap();
        assert!(w <= s + 5 && w > 0, "{r:?}");
    }
    for png in [
        "heatmap-iht.png",
        "heatmap-imp.png",
        "heatmap-iht-minus-paper.png",
    ] {
        assert!(dir.join("all").join(png).exists(), "{png}");
    }

    for i in 0..2 {
        let shard = format!("{i}/2");
        let out_dir = format!("shard-{i}");
        let o = sweep(dir, &["--shard", &shard, "--out", &out_dir]);
        assert!(o.status.success(), "{}", common::stderr(&o));
    }
    let m = common::spinr_in(
        dir,
        &["sweep", "merge", "shard-0", "shard-1", "--out", "merged"],
    );
    assert!(m.status.success(), "{}", common::stderr(&m));
    assert_eq!(rows(&dir.join("merged/results.csv")), whole);
}

#[test]
fn an_interrupted_sweep_resumes_to_one_row_per_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut args = PLANT.to_vec();
    args.extend(["--out", "runs"]);
    // Verbose: one line per cell on stderr, to interrupt after the first.
    let mut child = common::command(dir)
        .args(&args)
        .env("SPINR_VERBOSE", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("[1/") {
        line.clear();
    }
    assert!(line.contains("[1/"), "no cell finished");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let saved = rows(&dir.join("runs/results.csv"));
    // The interrupt may land after the last cell; usually it stops the sweep early.
    if !status.success() {
        assert_eq!(status.code(), Some(130), "{rest}");
        assert!(rest.contains("rerun"), "{rest}");
        assert!(!saved.is_empty() && saved.len() < 24, "{}", saved.len());
    }
    let again = sweep(dir, &["--out", "runs"]);
    assert!(again.status.success(), "{}", common::stderr(&again));
    let done = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        done.contains(&format!("{} done before", saved.len())),
        "{done}"
    );
    let all = rows(&dir.join("runs/results.csv"));
    let mut cells = cells_of(&all);
    assert_eq!(cells.len(), 24);
    cells.dedup();
    assert_eq!(cells.len(), 24, "a cell twice");
    // The rows saved before the interrupt are kept as they were.
    for r in &saved {
        assert!(all.contains(r), "{r:?}");
    }
    // A restart that changes how the IHT cells fit is refused, naming the option, rather
    // than adding rows of another fit to the table.
    for flag in [["--grow-from", "0.5"], ["--momentum", "0.3"]] {
        let changed = sweep(dir, &["--out", "runs", flag[0], flag[1]]);
        let err = common::stderr(&changed);
        assert_eq!(changed.status.code(), Some(2), "{err}");
        let key = flag[0].trim_start_matches("--").replace('-', "_");
        assert!(err.contains(&format!("options.{key}")), "{err}");
    }
    assert_eq!(rows(&dir.join("runs/results.csv")), all);
}

/// `spinr sweep` of IHT and IMP on digit 10 of the MNIST file (pixel coordinates, 40
/// features, 4 neurons, seed 0) with `extra` (the nonzeros, epochs and `--out`).
fn digit_sweep(dir: &Path, extra: &[&str]) -> Output {
    let digits = common::mnist();
    common::command(dir)
        .args([
            "sweep",
            "--task",
            "inr",
            "--image",
            digits.to_str().unwrap(),
            "--index",
            "10",
            "--coords",
            "pixel",
            "--features",
            "40",
            "--neurons",
            "4",
            "--methods",
            "iht,imp",
            "--seeds",
            "0",
            "--backend",
            "cpu",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_digit_sweep_gives_imp_a_row_for_every_s() {
    let tmp = tempfile::tempdir().unwrap();
    let out = digit_sweep(
        tmp.path(),
        &["--iters", "10", "--nonzeros", "20,80,150", "--out", "d"],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = std::fs::read_to_string(tmp.path().join("d/results.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let at = |k: &str| header.iter().position(|h| *h == k).unwrap();
    let (weights, psnr, peak) = (at("weights"), at("psnr"), at("peak_device_bytes"));
    let mut imp = 0;
    for l in text.lines().skip(1) {
        // sigma is a quoted list with a comma: split around it.
        let v: Vec<&str> = l.split(',').collect();
        let shift = |i: usize| if i > at("sigma") { i + 1 } else { i };
        let s: usize = v[2].parse().unwrap();
        let w: usize = v[shift(weights)].parse().unwrap();
        let p: f64 = v[shift(psnr)].parse().unwrap();
        let bytes: u64 = v[shift(peak)].parse().unwrap();
        assert!(w <= s && p > 5.0 && bytes > 0, "{l}");
        if v[0] == "imp" {
            imp += 1;
        }
    }
    assert_eq!(imp, 3);
}

#[test]
fn a_classify_sweep_scores_iht_and_imp_with_its_dense_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let digits = common::mnist();
    let out = common::command(tmp.path())
        .args([
            "sweep",
            "--task",
            "classify",
            "--data",
            digits.to_str().unwrap(),
            "--neurons",
            "5",
            "--nonzeros",
            "10,100",
            "--methods",
            "iht,imp",
            "--iters",
            "3",
            "--backend",
            "cpu",
            "--out",
            "c",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = std::fs::read_to_string(tmp.path().join("c/results.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let at = |k: &str| header.iter().position(|h| *h == k).unwrap();
    let (acc, dense) = (at("test_accuracy"), at("dense_test_accuracy"));
    // The confusion matrix (a quoted list with commas) comes after both columns.
    assert!(acc < at("confusion") && dense > at("confusion"));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let a: f64 = r[acc].parse().unwrap();
        assert!((0.0..=1.0).contains(&a), "{r:?}");
        if r[0] == "iht" {
            // Zeros against ones: a handful of weights separate them.
            assert!(a > 0.95, "{r:?}");
        }
    }
}

/// Splits a CSV line, keeping quoted fields (the confusion matrix) whole.
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

/// results.csv without its wall-clock column, read with quoted fields.
/// The value of column `k` in a row of [`rows_quoted`].
fn column(r: &[(String, String)], k: &str) -> String {
    r.iter()
        .find(|(n, _)| n == k)
        .unwrap_or_else(|| panic!("no {k} column"))
        .1
        .clone()
}

fn rows_quoted(path: &Path) -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap());
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(fields(l))
                .filter(|(k, _)| k != "seconds")
                .collect()
        })
        .collect()
}

/// A sweep killed outright (SIGKILL, as after a time limit's grace period) in the middle of an
/// IMP run resumes that run from its last round boundary, dense reference included, and ends
/// with the rows of an uninterrupted sweep.
#[test]
fn a_killed_sweep_resumes_its_imp_run_from_the_last_round() {
    let digits = common::mnist();
    let args = [
        "sweep",
        "--task",
        "classify",
        "--data",
        digits.to_str().unwrap(),
        "--neurons",
        "60",
        "--nonzeros",
        "50,2000",
        "--methods",
        "imp",
        "--iters",
        "8",
        "--backend",
        "cpu",
        "--out",
        "c",
    ];
    let whole = tempfile::tempdir().unwrap();
    let o = common::spinr_in(whole.path(), &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let parts = tempfile::tempdir().unwrap();
    let mut child = common::command(parts.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = parts
        .path()
        .join("c/imp-classify-m60-seed0.checkpoint.safetensors");
    let t = std::time::Instant::now();
    while !ckpt.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended first");
        assert!(t.elapsed().as_secs() < 120, "no checkpoint came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = common::spinr_in(parts.path(), &args);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming an IMP run at round"), "{err}");
    assert!(!ckpt.exists(), "the finished run removes its checkpoint");
    assert_eq!(
        rows_quoted(&parts.path().join("c/results.csv")),
        rows_quoted(&whole.path().join("c/results.csv"))
    );
}

/// A colour photo in a sweep is fitted as `spinr fit` fits it: in luma and chroma planes for
/// spinr's IHT (the same PSNR as the fit), on the channel axis for the paper's variant.
#[test]
fn a_colour_sweep_fits_planes_as_spinr_fit_does() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = common::asset("photos/chelsea.png");
    let photo = photo.to_str().unwrap();
    let common_args = [
        "--resize",
        "24",
        "--features",
        "64",
        "--iters",
        "5",
        "--backend",
        "cpu",
    ];
    let out = common::command(tmp.path())
        .args(["sweep", "--task", "inr", "--image", photo])
        .args(common_args)
        .args([
            "--neurons",
            "8",
            "--nonzeros",
            "60",
            "--methods",
            "iht,paper",
            "--seeds",
            "0",
            "--out",
            "d",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let fit = common::command(tmp.path())
        .args(["fit", photo])
        .args(common_args)
        .args(["-m", "8", "-s", "60", "--seed", "0", "--json", "--out", "f"])
        .output()
        .unwrap();
    assert!(fit.status.success(), "{}", common::stderr(&fit));
    let report: serde_json::Value = serde_json::from_slice(&fit.stdout).unwrap();
    assert_eq!(report["colour"], "luma-chroma");
    let text = std::fs::read_to_string(tmp.path().join("d/results.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let at = |k: &str| header.iter().position(|h| *h == k).unwrap();
    let mut methods = Vec::new();
    for l in text.lines().skip(1) {
        // sigma is a quoted list with commas: cut it out (its cell is left empty).
        let (head, rest) = l.split_once('"').unwrap();
        let (sigma, tail) = rest.split_once('"').unwrap();
        let v: Vec<&str> = head.split(',').chain(tail.split(',').skip(1)).collect();
        assert_eq!(v.len(), header.len(), "{l}");
        let psnr: f64 = v[at("psnr")].parse().unwrap();
        // Luma's σ for the planes (rows, columns), all three axes' on the channel axis.
        let axes = if v[0] == "iht" { 2 } else { 3 };
        assert_eq!(sigma.split(',').count(), axes, "{l}");
        assert_eq!(
            v[at("colour")],
            if v[0] == "iht" {
                "luma-chroma"
            } else {
                "channel-axis"
            }
        );
        methods.push(v[0].to_string());
        if v[0] == "iht" {
            let want = report["psnr"].as_f64().unwrap();
            assert!(
                (psnr - want).abs() < 1e-6,
                "sweep {psnr} against fit {want}"
            );
        } else {
            assert!(psnr > 10.0, "{l}");
        }
    }
    methods.sort();
    assert_eq!(methods, ["iht", "paper"]);
}

/// A grid with a cell that cannot run (`s` beyond what `m` neurons hold) is refused before the
/// sweep's folder is made, naming the cell and the flag, whatever the task.
#[test]
fn an_impossible_cell_is_refused_before_the_sweep_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let camera = common::asset("camera.png");
    let mnist = common::asset("mnist");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--task", "plant", "--inputs", "10", "--samples", "50"],
            "cell iht m=2 s=100 seed=0",
        ),
        (
            &[
                "--task",
                "inr",
                "--image",
                camera.to_str().unwrap(),
                "-d",
                "16",
            ],
            "cell iht m=2 s=100 seed=0",
        ),
        (
            &["--task", "classify", "--data", mnist.to_str().unwrap()],
            "cell iht m=2 s=2000 seed=0",
        ),
    ];
    for (i, (task, cell)) in cases.iter().enumerate() {
        let out_dir = format!("d{i}");
        let s = if i == 2 { "10,2000" } else { "10,100" };
        let out = common::command(tmp.path())
            .args(["sweep"])
            .args(*task)
            .args(["--neurons", "2,50", "--nonzeros", s, "--seeds", "0"])
            .args(["--backend", "cpu", "--out", &out_dir])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{task:?}: {e}");
        assert!(
            e.contains("invalid argument --nonzeros") && e.contains(cell),
            "{task:?}: {e}"
        );
        assert!(!tmp.path().join(&out_dir).exists(), "{task:?}");
    }
}

/// `--time-budget` in a sweep budgets each IHT cell (the rows say so) and leaves IMP cells to
/// their epochs; the sweep records it, and the tasks without image fits refuse it.
#[test]
fn a_time_budget_sweep_budgets_the_iht_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let out = digit_sweep(
        tmp.path(),
        &["--time-budget", "0.25", "--nonzeros", "20,80", "--out", "b"],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let rows = rows_quoted(&tmp.path().join("b/results.csv"));
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let (method, budget) = (column(r, "method"), column(r, "time_budget"));
        let iterations: usize = column(r, "iterations").parse().unwrap();
        if method == "iht" {
            assert_eq!(budget, "0.25", "{r:?}");
            assert_eq!(column(r, "iters"), iterations.to_string());
            assert!(iterations >= 1);
        } else {
            assert_eq!(budget, "", "{r:?}");
            assert_eq!(column(r, "iters"), "30");
        }
    }
    let manifest = std::fs::read_to_string(tmp.path().join("b/sweep.json")).unwrap();
    assert!(manifest.contains("\"time_budget\": 0.25"), "{manifest}");
    let mut plant: Vec<&str> = PLANT
        .iter()
        .copied()
        .filter(|a| *a != "--iters" && *a != "20")
        .collect();
    plant.extend(["--time-budget", "1", "--out", "p"]);
    let o = common::command(tmp.path()).args(&plant).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("--time-budget: a time budget is for image fits"),
        "{}",
        common::stderr(&o)
    ); // DCT terms too are for image fits only.
    let mut plant: Vec<&str> = PLANT.to_vec();
    plant.extend(["--dct-share", "0.2", "--out", "q"]);
    let o = common::command(tmp.path()).args(&plant).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("--dct-share: DCT terms are part of image models"),
        "{}",
        common::stderr(&o)
    );
}

/// `--dct-share` in an image sweep gives the IHT cells their DCT terms (the rows count them in
/// `weights` and say how many in `dct_terms`), leaves IMP cells without, and is recorded.
#[test]
fn a_dct_share_sweep_gives_the_iht_cells_their_terms() {
    let tmp = tempfile::tempdir().unwrap();
    let digits = common::mnist();
    let o = common::command(tmp.path())
        .args([
            "sweep",
            "--task",
            "inr",
            "--image",
            digits.to_str().unwrap(),
        ])
        .args(["--index", "10", "--features", "40", "--neurons", "4"])
        .args(["--methods", "iht,imp", "--seeds", "0", "--backend", "cpu"])
        .args(["--nonzeros", "80", "--iters", "3", "--dct-share", "0.25"])
        .args(["--out", "d"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rows = rows_quoted(&tmp.path().join("d/results.csv"));
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let want = if column(r, "method") == "iht" {
            "20"
        } else {
            "0"
        };
        assert_eq!(column(r, "dct_terms"), want, "{r:?}");
    }
    let manifest = std::fs::read_to_string(tmp.path().join("d/sweep.json")).unwrap();
    assert!(manifest.contains("\"dct_share\": 0.25"), "{manifest}");
}
