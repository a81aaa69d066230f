//! Sweeps: run a grid of (method, m, s, seed) cells, one row per cell in `results.csv`,
//! resumable, shardable between jobs, and drawn as the paper's heatmaps.
//!
//! A sweep folder holds:
//! - `sweep.json`, the [`Manifest`]: the grid and the runner's options. Written first; a run
//!   with a different manifest is refused rather than mixed into the folder.
//! - `results.csv`: columns `method,neurons,nonzeros,seed`, then the runner's report fields
//!   in its order. Rows in canonical cell order ([`grid`]), rewritten atomically as each cell
//!   finishes; a restart skips the cells already there.
//! - `heatmap-METHOD.png`, `heatmap-iht-minus-OTHER.png` and `summary.md`, written when a
//!   run or a merge ends ([`write_reports`]).
//!
//! Shards ([`Shard`]) run disjoint sets of groups into *separate* folders (two processes
//! rewriting one `results.csv` would drop each other's rows; [`store::ResultsFile`] refuses
//! that); [`merge`] joins the folders. The library never prints or reads the environment:
//! progress goes through a callback, the cells run through a [`CellRunner`].

pub mod grid;
pub mod heatmap;
pub mod manifest;
pub mod store;
pub mod summary;

pub use grid::{Cell, Grid, Method, Shard, Task};
pub use manifest::{Manifest, MANIFEST_FILE};
pub use store::{Results, RESULTS_FILE};
pub use summary::{Metric, SUMMARY_FILE};

use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// A cell's report: (field, value) pairs in the order they become columns.
pub type Row = Vec<(String, Value)>;

/// Trains the cells of a sweep.
pub trait CellRunner {
    /// Runs `cells`: one group (same method, m and seed; the values of s not done yet, in
    /// ascending order), calling `done` with each cell's row as soon as it is known. An error
    /// from `done` (an interrupt, a failed write) must be returned at once; rows already
    /// passed to `done` are saved whatever happens next.
    fn run_group(
        &mut self,
        cells: &[Cell],
        done: &mut dyn FnMut(&Cell, Row) -> Result<()>,
    ) -> Result<()>;

    /// A cheap check of one cell's sizes (`s` within what `m` neurons can hold), run on every
    /// cell of the shard before the sweep's folder is touched: a grid with an impossible cell
    /// fails at once, not hours into the sweep.
    fn check(&self, _cell: &Cell) -> Result<()> {
        Ok(())
    }
}

/// The fields of a serialisable report (a struct or a map) as a [`Row`], in declaration
/// order. The runner removes or renames fields named like a cell column (`method`,
/// `neurons`, `nonzeros`, `seed`).
pub fn report_fields<T: Serialize>(report: &T) -> Result<Row> {
    let bad = |e: serde_json::Error| Error::Runner(format!("the report does not serialise: {e}"));
    // Values straight from the struct (no float goes through text); the order from its JSON
    // text, since a `serde_json::Map` sorts its keys.
    let Value::Object(mut values) = serde_json::to_value(report).map_err(bad)? else {
        return Err(Error::Runner(
            "a report must serialise to a JSON object".into(),
        ));
    };
    let order: KeyOrder =
        serde_json::from_str(&serde_json::to_string(report).map_err(bad)?).map_err(bad)?;
    Ok(order
        .0
        .into_iter()
        .filter_map(|k| values.remove(&k).map(|v| (k, v)))
        .collect())
}

/// The keys of a JSON object in the order of its text.
struct KeyOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeyOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeyOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(KeyOrder(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// What a sweep reports while it runs.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Before the first cell: this shard's cells, and how many of them a previous run did.
    Start { cells: usize, skipped: usize },
    /// A cell finished and is saved; `metric` is the task's metric in its row.
    Cell {
        cell: &'a Cell,
        metric: Option<f64>,
        done: usize,
        cells: usize,
    },
}

/// How a finished run went.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Cells of this shard.
    pub cells: usize,
    /// Of them, done by an earlier run.
    pub skipped: usize,
    /// Done by this run.
    pub ran: usize,
    /// The files written at the end (heatmaps, summary).
    pub reports: Vec<PathBuf>,
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        msg: format!("cannot create the sweep folder: {e}"),
    })
}

/// Runs the cells of `shard` not yet in `dir/results.csv`, group by group, saving each row as
/// it comes, then writes the heatmaps and summary of everything in the folder.
///
/// `progress` sees every event; `Break` stops the sweep after the cell just saved and the run
/// returns [`Error::Interrupted`]. Any error leaves `results.csv` holding every cell finished
/// so far, and the same call resumes.
pub fn run(
    dir: &Path,
    manifest: &Manifest,
    shard: Shard,
    runner: &mut dyn CellRunner,
    progress: &mut dyn FnMut(Event) -> ControlFlow<()>,
) -> Result<Outcome> {
    let grid = &manifest.grid;
    let groups = grid.shard_groups(shard);
    // Before anything is written: a cell that cannot run leaves no folder behind.
    for cell in groups.iter().flatten() {
        runner.check(cell).map_err(|e| match e {
            Error::Invalid { param, msg } => Error::invalid(param, format!("cell {cell}: {msg}")),
            e => e,
        })?;
    }
    create_dir(dir)?;
    manifest::claim_dir(dir, manifest)?;
    let (mut file, mut results) = store::ResultsFile::open(dir, grid)?;
    let cells: usize = groups.iter().map(Vec::len).sum();
    let skipped = groups
        .iter()
        .flatten()
        .filter(|c| results.contains(c))
        .count();
    if progress(Event::Start { cells, skipped }).is_break() {
        return Err(Error::Interrupted);
    }
    let metric = Metric::of(grid.task()).column;
    let mut done = skipped;
    for group in &groups {
        let pending: Vec<Cell> = group
            .iter()
            .filter(|c| !results.contains(c))
            .copied()
            .collect();
        if pending.is_empty() {
            continue;
        }
        let mut save = |cell: &Cell, row: Row| -> Result<()> {
            if !pending.contains(cell) {
                return Err(Error::Runner(format!(
                    "{cell} was not asked for (the group is {})",
                    pending[0]
                )));
            }
            results.insert(cell, row)?;
            file.write(&results)?;
            done += 1;
            let event = Event::Cell {
                cell,
                metric: results.number(cell, metric),
                done,
                cells,
            };
            match progress(event) {
                ControlFlow::Break(()) => Err(Error::Interrupted),
                ControlFlow::Continue(()) => Ok(()),
            }
        };
        runner.run_group(&pending, &mut save)?;
        if let Some(c) = pending.iter().find(|c| !results.contains(c)) {
            return Err(Error::Runner(format!(
                "the group of {c} ended without a row for it"
            )));
        }
    }
    let reports = write_reports(dir, manifest, &results)?;
    Ok(Outcome {
        cells,
        skipped,
        ran: done - skipped,
        reports,
    })
}

/// How a merge went.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// Cells of the grid.
    pub cells: usize,
    /// Of them, in some folder.
    pub present: usize,
    pub reports: Vec<PathBuf>,
}

/// Joins sweep folders (the shards of one grid) into `out`: the same `sweep.json`, the
/// union of the rows in canonical order, and the reports. Refuses folders of different
/// sweeps and a cell found twice with different values; a cell found twice with equal values
/// counts once. Missing cells are allowed (see [`Merged::present`]).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    let data_err = |path: PathBuf, msg: String| Error::Data { path, msg };
    let Some(first) = dirs.first() else {
        return Err(data_err(
            out.to_path_buf(),
            "no sweep folders to merge".into(),
        ));
    };
    let mut manifest: Option<(Manifest, String)> = None;
    let mut all: Option<Results> = None;
    for dir in dirs {
        let path = dir.join(MANIFEST_FILE);
        let text = store::read_optional(&path)?.ok_or_else(|| {
            data_err(
                path.clone(),
                "missing: this is not a spinr sweep folder".into(),
            )
        })?;
        let m = Manifest::from_json(&text).map_err(|e| data_err(path.clone(), e))?;
        if let Some((m0, t0)) = &manifest {
            if *t0 != text {
                return Err(data_err(
                    path,
                    format!(
                        "a different sweep from {0} ({0} vs this one: {1}): only shards of one \
                         sweep merge",
                        first.display(),
                        m0.difference(&m)
                    ),
                ));
            }
        }
        let results = Results::load(&dir.join(RESULTS_FILE), &m.grid)?;
        match &mut all {
            None => all = Some(results),
            Some(all) => all.merge(&results, dir)?,
        }
        manifest.get_or_insert((m, text));
    }
    let (manifest, text) = manifest.expect("at least one folder");
    let results = all.expect("at least one folder");
    create_dir(out)?;
    // The merged folder is a sweep folder like any other: it could be resumed.
    manifest::claim_dir_as(out, &manifest, &text)?;
    let path = out.join(RESULTS_FILE);
    let old = store::read_optional(&path)?;
    if old.is_some() {
        // Whatever is there must be part of what is merged now.
        let mut check = results.clone();
        check.merge(&Results::load(&path, &manifest.grid)?, out)?;
        if check.len() != results.len() {
            return Err(Error::invalid(
                crate::error::Param::Output,
                format!(
                    "{} holds cells that none of the merged folders has; merge into a new folder",
                    path.display()
                ),
            ));
        }
    }
    crate::output::write_bytes(&path, results.to_csv().as_bytes())?;
    let reports = write_reports(out, &manifest, &results)?;
    Ok(Merged {
        cells: manifest.grid.len(),
        present: results.len(),
        reports,
    })
}

/// Writes the heatmaps (`heatmap-NAME.png`) and `summary.md` of `results` into `dir`.
pub fn write_reports(dir: &Path, manifest: &Manifest, results: &Results) -> Result<Vec<PathBuf>> {
    let metric = Metric::of(manifest.grid.task());
    if !results.is_empty() && !results.fields().iter().any(|f| f == metric.column) {
        return Err(Error::Runner(format!(
            "the rows have no {} column, which the {} heatmaps show",
            metric.column,
            manifest.grid.task().as_str()
        )));
    }
    let maps = summary::maps(results);
    let mut written = Vec::new();
    let mut names = Vec::new();
    for map in &maps {
        let name = format!("heatmap-{}.png", map.name());
        let path = dir.join(&name);
        heatmap::write(&path, map)?;
        written.push(path);
        names.push(name);
    }
    let path = dir.join(SUMMARY_FILE);
    let text = summary::markdown(manifest, &maps, &names);
    crate::output::write_bytes(&path, text.as_bytes())?;
    written.push(path);
    Ok(written)
}
