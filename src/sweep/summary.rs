//! What a sweep's figures show: per method, the median over seeds of the task's metric in each
//! (m, s) cell, plus difference maps; and `summary.md`, the same numbers as markdown tables.

use super::grid::{Cell, Method, Task};
use super::manifest::Manifest;
use super::store::Results;
use std::fmt::Write;

pub const SUMMARY_FILE: &str = "summary.md";

/// The number a task's heatmaps show, with fixed colour ranges so that runs compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metric {
    /// The results.csv column.
    pub column: &'static str,
    /// Axis label.
    pub label: &'static str,
    /// Colour range of a method's map.
    pub lo: f64,
    pub hi: f64,
    /// Colour range of a difference map: −diff to +diff.
    pub diff: f64,
    /// Decimals printed in a heatmap cell (summary.md prints one more).
    pub decimals: usize,
}

impl Metric {
    pub fn of(task: Task) -> Metric {
        match task {
            Task::Inr => Metric {
                column: "psnr",
                label: "PSNR (dB)",
                lo: 0.0,
                hi: 50.0,
                diff: 20.0,
                decimals: 1,
            },
            Task::Plant => Metric {
                column: "test_psnr",
                label: "test PSNR (dB)",
                lo: -20.0,
                hi: 50.0,
                diff: 20.0,
                decimals: 1,
            },
            Task::Classify => Metric {
                column: "test_accuracy",
                label: "test accuracy",
                lo: 0.0,
                hi: 1.0,
                diff: 0.5,
                decimals: 2,
            },
        }
    }
}

/// The median of the finite values, `None` if there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let k = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[k]
    } else {
        (v[k - 1] + v[k]) / 2.0
    })
}

/// One (m, s) cell of a map: a value per seed (`None` where missing) and their median.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    pub values: Vec<Option<f64>>,
    pub median: Option<f64>,
}

impl Stat {
    fn new(values: Vec<Option<f64>>) -> Stat {
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        Stat {
            median: median(&present),
            values,
        }
    }
}

/// What a map shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The metric of one method.
    Method(Method),
    /// The first method's metric minus the second's, seed by seed (same seed, same features
    /// and data), then the median of the differences.
    Difference(Method, Method),
}

/// A heatmap's numbers: rows are m (ascending), columns s (ascending).
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub kind: Kind,
    pub metric: Metric,
    pub neurons: Vec<usize>,
    pub nonzeros: Vec<usize>,
    pub seeds: Vec<u64>,
    /// `cells[i][j]`: m = `neurons[i]`, s = `nonzeros[j]`.
    pub cells: Vec<Vec<Stat>>,
}

impl Map {
    /// File-name stem: "iht", "iht-minus-imp".
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Method(m) => m.as_str().to_string(),
            Kind::Difference(a, b) => format!("{}-minus-{}", a.as_str(), b.as_str()),
        }
    }

    pub fn title(&self) -> String {
        match self.kind {
            Kind::Method(m) => format!("{}: median {} over seeds", m.as_str(), self.metric.column),
            Kind::Difference(a, b) => format!(
                "{} − {}: median {} difference over seeds",
                a.as_str(),
                b.as_str(),
                self.metric.column
            ),
        }
    }

    /// The colour range and whether it is diverging (differences).
    pub fn range(&self) -> (f64, f64, bool) {
        match self.kind {
            Kind::Method(_) => (self.metric.lo, self.metric.hi, false),
            Kind::Difference(..) => (-self.metric.diff, self.metric.diff, true),
        }
    }
}

/// The maps of a sweep's results: one per method, then IHT − IMP and IHT − paper where both
/// methods are in the grid.
pub fn maps(results: &Results) -> Vec<Map> {
    let grid = results.grid();
    let metric = Metric::of(grid.task());
    let value = |method: Method, m: usize, s: usize, seed: u64| {
        let cell = Cell {
            method,
            neurons: m,
            nonzeros: s,
            seed,
        };
        results.number(&cell, metric.column)
    };
    let map = |kind: Kind| {
        let cells = grid
            .neurons()
            .iter()
            .map(|&m| {
                let row = grid.nonzeros().iter().map(|&s| {
                    let seeds = grid.seeds().iter().map(|&seed| match kind {
                        Kind::Method(a) => value(a, m, s, seed),
                        Kind::Difference(a, b) => {
                            Some(value(a, m, s, seed)? - value(b, m, s, seed)?)
                        }
                    });
                    Stat::new(seeds.collect())
                });
                row.collect()
            })
            .collect();
        Map {
            kind,
            metric,
            neurons: grid.neurons().to_vec(),
            nonzeros: grid.nonzeros().to_vec(),
            seeds: grid.seeds().to_vec(),
            cells,
        }
    };
    let has = |m: Method| grid.methods().contains(&m);
    let mut out: Vec<Map> = grid
        .methods()
        .iter()
        .map(|&m| map(Kind::Method(m)))
        .collect();
    for other in [Method::Imp, Method::Paper] {
        if has(Method::Iht) && has(other) {
            out.push(map(Kind::Difference(Method::Iht, other)));
        }
    }
    out
}

/// A value as printed in a heatmap cell or summary.md: "–" when missing, and no "-0.0".
pub fn number(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => {
            let s = format!("{x:.decimals$}");
            match s.strip_prefix('-') {
                Some(t) if t.parse::<f64>() == Ok(0.0) => t.to_string(),
                _ => s,
            }
        }
        None => "–".into(),
    }
}

/// `summary.md`: per map a table, rows m, columns s, each cell "median (v1 v2 …)" with the
/// values in seed order.
pub fn markdown(manifest: &Manifest, maps: &[Map], files: &[String]) -> String {
    let grid = &manifest.grid;
    let metric = Metric::of(grid.task());
    let d = metric.decimals + 1;
    let seeds: Vec<String> = grid.seeds().iter().map(|s| s.to_string()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "# Sweep: {}\n", grid.task().as_str());
    let _ = writeln!(
        out,
        "Metric: `{}`, {}. Rows: m (neurons); columns: s (nonzeros). Each cell: the median \
         over seeds, then the value of each seed ({}) in brackets, – where missing. \
         Differences are taken seed by seed.\n",
        metric.column,
        metric.label,
        seeds.join(", ")
    );
    for (map, file) in maps.iter().zip(files) {
        let heading = match map.kind {
            Kind::Method(m) => m.as_str().to_string(),
            Kind::Difference(a, b) => format!("{} − {}", a.as_str(), b.as_str()),
        };
        let _ = writeln!(out, "## {heading}\n\n![{heading}]({file})\n");
        let cols: Vec<String> = map.nonzeros.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(out, "| m \\ s | {} |", cols.join(" | "));
        let _ = writeln!(out, "|---:|{}", "---:|".repeat(cols.len()));
        for (m, row) in map.neurons.iter().zip(&map.cells) {
            let cells: Vec<String> = row
                .iter()
                .map(|st| {
                    let each: Vec<String> = st.values.iter().map(|v| number(*v, d)).collect();
                    format!("{} ({})", number(st.median, d), each.join(" "))
                })
                .collect();
            let _ = writeln!(out, "| {m} | {} |", cells.join(" | "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0, 2.0]), Some(1.5));
    }

    #[test]
    fn numbers_print_without_negative_zero() {
        assert_eq!(number(Some(-0.01), 1), "0.0");
        assert_eq!(number(Some(-0.0), 2), "0.00");
        assert_eq!(number(Some(-0.06), 1), "-0.1");
        assert_eq!(number(Some(42.25), 1), "42.2");
        assert_eq!(number(None, 1), "–");
    }
}
