//! `spinr::sweep` with a fake runner: resuming after an interrupt or a crash, refusing mixed
//! grids, shards merged, heatmaps and summary.

use serde_json::{json, Value};
use spinr::sweep::heatmap;
use spinr::sweep::summary::{self, Kind};
use spinr::sweep::{
    self, Cell, CellRunner, Event, Grid, Manifest, Method, Results, Row, Shard, Task,
};
use spinr::Error;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Deterministic rows with every kind of value a report has, awkward strings included.
struct Fake {
    /// Fail (as a crashed fit would) before the cell with this number.
    fail_at: Option<usize>,
    produced: usize,
    /// Every cell asked for, across calls.
    asked: Vec<Cell>,
    /// Added to the PSNR, to make runs disagree.
    offset: f64,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            fail_at: None,
            produced: 0,
            asked: Vec::new(),
            offset: 0.0,
        }
    }
}

fn psnr(c: &Cell) -> f64 {
    let method = match c.method {
        Method::Iht => 3.0,
        Method::Imp => 0.0,
        Method::Paper => 1.5,
    };
    10.0 + (c.nonzeros as f64).ln() * 2.0 + c.neurons as f64 / 7.0 + c.seed as f64 / 3.0 + method
}

fn row(c: &Cell, offset: f64) -> Row {
    vec![
        ("psnr".into(), json!(psnr(c) + offset)),
        ("seconds".into(), json!(0.1 + 1e-9 * c.nonzeros as f64)),
        ("peak_device_bytes".into(), json!(u64::MAX - c.seed)),
        (
            "note".into(),
            json!(format!("m={}, \"s\"\n{}", c.neurons, c.nonzeros)),
        ),
        ("sigma".into(), json!([20.0, 0.05])),
        ("ssim".into(), Value::Null),
        ("stopped".into(), json!(false)),
    ]
}

impl CellRunner for Fake {
    fn run_group(
        &mut self,
        cells: &[Cell],
        done: &mut dyn FnMut(&Cell, Row) -> spinr::Result<()>,
    ) -> spinr::Result<()> {
        let g = (cells[0].method, cells[0].neurons, cells[0].seed);
        assert!(cells.iter().all(|c| (c.method, c.neurons, c.seed) == g));
        for c in cells {
            self.asked.push(*c);
            if Some(self.produced) == self.fail_at {
                return Err(Error::Gpu("simulated device loss".into()));
            }
            self.produced += 1;
            done(c, row(c, self.offset))?;
        }
        Ok(())
    }
}

fn grid() -> Grid {
    Grid::new(
        Task::Inr,
        vec![Method::Iht, Method::Imp, Method::Paper],
        vec![10, 50],
        vec![20, 100, 500],
        vec![0, 1, 2],
    )
    .unwrap()
}

fn manifest() -> Manifest {
    // Floats that a lax JSON parser could get one ulp off: sweep.json is kept byte for byte.
    let sigma = [0.1 + 0.2, 1e-7, 2.2250738585072014e-308];
    Manifest::new(
        grid(),
        json!({"image": "camera.png", "iters": 30, "sigma": sigma}),
    )
}

fn go(dir: &Path, m: &Manifest, shard: Shard, runner: &mut Fake) -> spinr::Result<sweep::Outcome> {
    sweep::run(dir, m, shard, runner, &mut |_| ControlFlow::Continue(()))
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn csv(dir: &Path) -> String {
    String::from_utf8(read(dir.join(sweep::RESULTS_FILE))).unwrap()
}

/// The cells of results.csv, each once.
fn cells_in(dir: &Path, m: &Manifest) -> Vec<Cell> {
    let r = Results::load(&dir.join(sweep::RESULTS_FILE), &m.grid).unwrap();
    m.grid
        .cells()
        .into_iter()
        .filter(|c| r.contains(c))
        .collect()
}

fn uninterrupted(m: &Manifest) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = go(dir.path(), m, Shard::ALL, &mut Fake::new()).unwrap();
    assert_eq!((out.cells, out.skipped, out.ran), (54, 0, 54));
    dir
}

#[test]
fn an_interrupted_sweep_resumes_to_the_same_files() {
    let m = manifest();
    let whole = uninterrupted(&m);
    let dir = tempfile::tempdir().unwrap();
    // Ctrl-C after the 7th cell: mid-group (groups have 3 cells).
    let mut fake = Fake::new();
    let mut seen = 0;
    let r = sweep::run(dir.path(), &m, Shard::ALL, &mut fake, &mut |e| match e {
        Event::Cell { done: 7, .. } => ControlFlow::Break(()),
        Event::Cell { .. } => {
            seen += 1;
            ControlFlow::Continue(())
        }
        Event::Start { .. } => ControlFlow::Continue(()),
    });
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert_eq!(seen, 6);
    assert_eq!(cells_in(dir.path(), &m), m.grid.cells()[..7]);
    assert_eq!(fake.asked.len(), 7, "the sweep went on after the interrupt");
    // The rows are complete lines of the uninterrupted file.
    assert!(csv(whole.path()).starts_with(&csv(dir.path())));

    let mut again = Fake::new();
    let mut start = None;
    let out = sweep::run(dir.path(), &m, Shard::ALL, &mut again, &mut |e| {
        if let Event::Start { cells, skipped } = e {
            start = Some((cells, skipped));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(start, Some((54, 7)));
    assert_eq!((out.skipped, out.ran), (7, 47));
    // Only the missing cells ran: the rest of the broken group, then the others.
    assert_eq!(again.asked, m.grid.cells()[7..]);
    assert_eq!(again.asked[..2], m.grid.groups()[2][1..]);
    for f in [
        sweep::RESULTS_FILE,
        sweep::MANIFEST_FILE,
        sweep::SUMMARY_FILE,
    ] {
        assert_eq!(read(dir.path().join(f)), read(whole.path().join(f)), "{f}");
    }
    for p in &out.reports {
        let name = p.file_name().unwrap();
        assert_eq!(read(p.clone()), read(whole.path().join(name)), "{p:?}");
    }
    // A third run has nothing to do.
    let mut idle = Fake::new();
    let out = go(dir.path(), &m, Shard::ALL, &mut idle).unwrap();
    assert_eq!((out.skipped, out.ran), (54, 0));
    assert!(idle.asked.is_empty());
    assert_eq!(csv(dir.path()), csv(whole.path()));
}

#[test]
fn a_crash_loses_no_finished_cell() {
    let m = manifest();
    let whole = uninterrupted(&m);
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::new();
    fake.fail_at = Some(11);
    let e = go(dir.path(), &m, Shard::ALL, &mut fake).unwrap_err();
    assert!(e.to_string().contains("simulated device loss"), "{e}");
    assert_eq!(cells_in(dir.path(), &m), m.grid.cells()[..11]);
    go(dir.path(), &m, Shard::ALL, &mut Fake::new()).unwrap();
    assert_eq!(csv(dir.path()), csv(whole.path()));
}

#[test]
fn a_restart_with_another_grid_or_options_is_refused() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::new();
    fake.fail_at = Some(4);
    go(dir.path(), &m, Shard::ALL, &mut fake).unwrap_err();
    let before = csv(dir.path());

    let other = Grid::new(
        Task::Inr,
        vec![Method::Iht, Method::Imp, Method::Paper],
        vec![10, 50, 200],
        vec![20, 100, 500],
        vec![0, 1, 2],
    )
    .unwrap();
    let m2 = Manifest::new(other, m.options.clone());
    let mut fake = Fake::new();
    let e = go(dir.path(), &m2, Shard::ALL, &mut fake).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Invalid {
                param: spinr::error::Param::Output,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("sweep.json") && msg.contains("neurons"),
        "{msg}"
    );
    assert!(
        msg.contains("[10,50]") && msg.contains("[10,50,200]"),
        "{msg}"
    );
    assert!(fake.asked.is_empty());

    let mut m3 = m.clone();
    m3.options["iters"] = json!(60);
    let msg = go(dir.path(), &m3, Shard::ALL, &mut fake)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("options.iters: 30 vs 60"), "{msg}");

    assert_eq!(csv(dir.path()), before);
    // A folder with results but no manifest is refused too.
    std::fs::remove_file(dir.path().join(sweep::MANIFEST_FILE)).unwrap();
    let msg = go(dir.path(), &m, Shard::ALL, &mut fake)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no sweep.json"), "{msg}");
}

#[test]
fn two_shards_merged_equal_the_whole_sweep() {
    let m = manifest();
    let whole = uninterrupted(&m);
    let root = tempfile::tempdir().unwrap();
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| root.path().join(format!("shard-{i}")))
        .collect();
    let mut counts = Vec::new();
    for (i, dir) in shards.iter().enumerate() {
        let out = go(dir, &m, Shard::new(i, 2).unwrap(), &mut Fake::new()).unwrap();
        counts.push(out.cells);
        // A shard holds whole groups.
        let cells = cells_in(dir, &m);
        for c in &cells {
            let group = cells
                .iter()
                .filter(|d| (d.method, d.neurons, d.seed) == (c.method, c.neurons, c.seed));
            assert_eq!(group.count(), 3, "{c}");
        }
    }
    assert_eq!(counts, [27, 27]);
    // Merge order does not matter.
    let merged = root.path().join("all");
    let out = sweep::merge(&[shards[1].clone(), shards[0].clone()], &merged).unwrap();
    assert_eq!((out.cells, out.present), (54, 54));
    for f in [
        sweep::RESULTS_FILE,
        sweep::MANIFEST_FILE,
        sweep::SUMMARY_FILE,
    ] {
        assert_eq!(read(merged.join(f)), read(whole.path().join(f)), "{f}");
    }
    for p in &out.reports {
        assert!(p.exists(), "{p:?}");
    }
    // Merging again into the same folder (or a shard with itself) changes nothing.
    let again = sweep::merge(
        &[shards[0].clone(), shards[1].clone(), shards[0].clone()],
        &merged,
    )
    .unwrap();
    assert_eq!(again.present, 54);
    assert_eq!(csv(&merged), csv(whole.path()));
    // One shard alone: a partial merge, with the missing cells counted.
    let half = sweep::merge(&shards[..1], &root.path().join("half")).unwrap();
    assert_eq!((half.cells, half.present), (54, 27));
}

#[test]
fn merge_refuses_other_sweeps_and_disagreeing_duplicates() {
    let m = manifest();
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    go(&a, &m, Shard::new(0, 2).unwrap(), &mut Fake::new()).unwrap();

    let mut other = m.clone();
    other.options["image"] = json!("other.png");
    let b = root.path().join("b");
    go(&b, &other, Shard::new(1, 2).unwrap(), &mut Fake::new()).unwrap();
    let e = sweep::merge(&[a.clone(), b.clone()], &root.path().join("m1")).unwrap_err();
    assert!(e.is_bad_input(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("b/sweep.json") && msg.contains("options.image"),
        "{msg}"
    );

    // The same cells run twice with different results (overlapping shards).
    let c = root.path().join("c");
    let mut drift = Fake::new();
    drift.offset = 1e-9;
    go(&c, &m, Shard::ALL, &mut drift).unwrap();
    let e = sweep::merge(&[a.clone(), c.clone()], &root.path().join("m2")).unwrap_err();
    assert!(e.is_bad_input(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("iht m=10 s=20 seed=0") && msg.contains("psnr"),
        "{msg}"
    );
    assert!(!root.path().join("m2").join(sweep::RESULTS_FILE).exists());

    // A folder that is not a sweep.
    let e = sweep::merge(
        &[a.clone(), root.path().join("nothing")],
        &root.path().join("m3"),
    );
    assert!(e.unwrap_err().to_string().contains("sweep.json"));
    // Merging into a folder of another sweep is refused like a run would be.
    let e = sweep::merge(&[a], &b).unwrap_err();
    assert!(e.to_string().contains("different sweep"), "{e}");
}

#[test]
fn a_runner_whose_rows_change_shape_fails_clearly() {
    struct Shifty;
    impl CellRunner for Shifty {
        fn run_group(
            &mut self,
            cells: &[Cell],
            done: &mut dyn FnMut(&Cell, Row) -> spinr::Result<()>,
        ) -> spinr::Result<()> {
            for (k, c) in cells.iter().enumerate() {
                let name = if k == 0 { "psnr" } else { "PSNR" };
                done(c, vec![(name.into(), json!(1.0))])?;
            }
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let e = sweep::run(
        dir.path(),
        &manifest(),
        Shard::ALL,
        &mut Shifty,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Runner(_)), "{e:?}");
    assert!(e.to_string().contains("[PSNR]"), "{e}");
    assert_eq!(cells_in(dir.path(), &manifest()).len(), 1);
}

/// Results with known PSNRs: cell (m=10, s=20) has 10, 30, 20 (median 20), (m=50, s=500)
/// has 40, 45 and no third seed (median 42.5), and (m=50, s=20) none.
fn known() -> Results {
    let g = Grid::new(
        Task::Inr,
        vec![Method::Iht, Method::Imp],
        vec![10, 50],
        vec![20, 500],
        vec![0, 1, 2],
    )
    .unwrap();
    let mut r = Results::new(g);
    let mut put = |method, neurons, nonzeros, seed, v: f64| {
        let c = Cell {
            method,
            neurons,
            nonzeros,
            seed,
        };
        r.insert(
            &c,
            vec![("psnr".into(), json!(v)), ("seconds".into(), json!(1.0))],
        )
        .unwrap();
    };
    for (seed, v) in [(0, 10.0), (1, 30.0), (2, 20.0)] {
        put(Method::Iht, 10, 20, seed, v);
        put(Method::Imp, 10, 20, seed, v - 4.0 - seed as f64);
    }
    put(Method::Iht, 50, 500, 0, 40.0);
    put(Method::Iht, 50, 500, 1, 45.0);
    r
}

#[test]
fn heatmaps_colour_cells_by_their_median() {
    let maps = summary::maps(&known());
    let names: Vec<String> = maps.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["iht", "imp", "iht-minus-imp"]);
    let iht = &maps[0];
    assert_eq!(iht.cells[0][0].median, Some(20.0));
    assert_eq!(iht.cells[1][1].median, Some(42.5));
    assert_eq!(iht.cells[1][1].values, [Some(40.0), Some(45.0), None]);
    // Differences pair the seeds: 4, 5, 6.
    assert_eq!(maps[2].kind, Kind::Difference(Method::Iht, Method::Imp));
    assert_eq!(maps[2].cells[0][0].median, Some(5.0));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heatmap-iht.png");
    heatmap::write(&path, iht).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), heatmap::size(2, 2));
    let pic = heatmap::render(iht).unwrap();
    assert_eq!(png.as_raw(), &pic.rgb, "the PNG is the rendered picture");
    let at = |i: usize, j: usize| {
        // Inside the cell, clear of its centred label.
        let (x0, y0, x1, y1) = pic.cells[i][j];
        assert!(
            x1 - x0 > 40 && y1 - y0 > 30,
            "cell {i},{j}: {:?}",
            pic.cells[i][j]
        );
        let p = png.get_pixel(x0 as u32 + 4, y0 as u32 + 4).0;
        (p[0], p[1], p[2])
    };
    assert_eq!(at(0, 0), heatmap::colour(20.0, 0.0, 50.0, false));
    assert_eq!(at(1, 1), heatmap::colour(42.5, 0.0, 50.0, false));
    assert_eq!(at(1, 0), heatmap::MISSING);
    assert_ne!(at(0, 0), at(1, 1));
    // m grows upwards: the m=50 row is above the m=10 row.
    assert!(pic.cells[1][0].1 < pic.cells[0][0].1);
    // The label is drawn in the cell: not every pixel there has the fill colour.
    let (x0, y0, x1, y1) = pic.cells[0][0];
    let fill = heatmap::colour(20.0, 0.0, 50.0, false);
    let inked = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| pic.pixel(x, y) != fill)
        .count();
    assert!(inked > 30, "no label in the cell ({inked} pixels)");
}

#[test]
fn the_summary_lists_medians_and_seeds() {
    let r = known();
    let m = Manifest::new(r.grid().clone(), json!({}));
    let dir = tempfile::tempdir().unwrap();
    sweep::write_reports(dir.path(), &m, &r).unwrap();
    let md = std::fs::read_to_string(dir.path().join(sweep::SUMMARY_FILE)).unwrap();
    assert!(md.contains("## iht\n"), "{md}");
    assert!(
        md.contains("| 10 | 20.00 (10.00 30.00 20.00) | – (– – –) |"),
        "{md}"
    );
    assert!(
        md.contains("| 50 | – (– – –) | 42.50 (40.00 45.00 –) |"),
        "{md}"
    );
    assert!(md.contains("## iht − imp"), "{md}");
    assert!(md.contains("| 10 | 5.00 (4.00 5.00 6.00) |"), "{md}");
    assert!(md.contains("(heatmap-iht-minus-imp.png)"), "{md}");
    for f in [
        "heatmap-iht.png",
        "heatmap-imp.png",
        "heatmap-iht-minus-imp.png",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
}

#[test]
fn report_fields_keep_declaration_order_and_exact_values() {
    #[derive(serde::Serialize)]
    struct Report {
        status: &'static str,
        psnr: f64,
        batch_size: Option<usize>,
        adapter: String,
    }
    let r = Report {
        status: "done",
        psnr: 0.1 + 0.2,
        batch_size: None,
        adapter: "a, b".into(),
    };
    let row = sweep::report_fields(&r).unwrap();
    let names: Vec<&str> = row.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["status", "psnr", "batch_size", "adapter"]);
    assert_eq!(
        row[1].1.as_f64().unwrap().to_bits(),
        (0.1f64 + 0.2).to_bits()
    );
    assert_eq!(row[2].1, Value::Null);
}
