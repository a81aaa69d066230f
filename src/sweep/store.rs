//! `results.csv`, one row per finished cell: CSV writing and reading, a restart's view of
//! what is done, and the union of shards.
//!
//! `results.csv` always holds its rows in canonical cell order, so its bytes depend only on
//! which cells are done and what they reported: not on the order they ran in, interruptions,
//! or how the grid was split between shards. A row keeps the exact text it was first written
//! with, so rewriting and merging never change a value.

use super::grid::{Cell, Grid, Method};
use super::Row;
use crate::error::{Error, Param, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const RESULTS_FILE: &str = "results.csv";
/// The columns naming a cell, first in every row.
pub const CELL_COLUMNS: [&str; 4] = ["method", "neurons", "nonzeros", "seed"];

pub(crate) fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Reads a file, `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The CSV text of a string: quoted (quotes doubled) when it holds a comma, quote or line
/// break, has edge spaces or is empty (an empty string must differ from null's empty field).
pub fn quote(s: &str) -> String {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ')
    {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text of a report value. Numbers are written as JSON writes them: integers exactly,
/// floats as the shortest text that reads back to the same `f64`. Null is an empty field;
/// arrays and objects are their JSON text.
pub fn encode(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        other => quote(&other.to_string()),
    }
}

/// A field's text without its CSV quoting.
pub fn unquote(raw: &str) -> String {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => raw.to_string(),
    }
}

/// Splits CSV text into records of raw fields (quotes kept, so a row can be written back
/// byte for byte). Accepts `\n` and `\r\n` line ends and a missing final line end.
pub fn split_csv(text: &str) -> std::result::Result<Vec<Vec<&str>>, String> {
    let b = text.as_bytes();
    let (mut records, mut fields) = (Vec::new(), Vec::new());
    let (mut start, mut line, mut i) = (0, 1, 0);
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'"' if quoted => {
                if b.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                    if !matches!(b.get(i + 1), None | Some(b',' | b'\n' | b'\r')) {
                        return Err(format!("line {line}: text after a closing quote"));
                    }
                }
            }
            b'"' if i == start => quoted = true,
            b'"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            b',' if !quoted => {
                fields.push(&text[start..i]);
                start = i + 1;
            }
            b'\n' if !quoted => {
                let end = if i > start && b[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                fields.push(&text[start..end]);
                records.push(std::mem::take(&mut fields));
                start = i + 1;
                line += 1;
            }
            b'\n' => line += 1,
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(format!("line {line}: a quoted field is not closed"));
    }
    if start < b.len() {
        fields.push(&text[start..]);
        records.push(fields);
    }
    Ok(records)
}

/// The finished cells of one sweep folder (or of several, merged).
#[derive(Clone, Debug)]
pub struct Results {
    grid: Grid,
    /// The report fields after the cell columns: the first row's, then every row's.
    fields: Vec<String>,
    /// By canonical position: the cell and its report fields as CSV text.
    rows: BTreeMap<usize, (Cell, Vec<String>)>,
}

impl Results {
    pub fn new(grid: Grid) -> Results {
        Results {
            grid,
            fields: Vec::new(),
            rows: BTreeMap::new(),
        }
    }

    /// Reads `path` (none yet: no cells done), checking every row against the grid.
    pub fn load(path: &Path, grid: &Grid) -> Result<Results> {
        let mut r = Results::new(grid.clone());
        let Some(text) = read_optional(path)? else {
            return Ok(r);
        };
        let records = split_csv(&text).map_err(|e| data_err(path, e))?;
        let Some((header, rows)) = records.split_first() else {
            return Ok(r);
        };
        let names: Vec<String> = header.iter().map(|h| unquote(h)).collect();
        if names.len() < 4 || names[..4] != CELL_COLUMNS {
            return Err(data_err(
                path,
                format!("the header must start with {}", CELL_COLUMNS.join(",")),
            ));
        }
        r.fields = names[4..].to_vec();
        for (k, row) in rows.iter().enumerate() {
            let line = k + 2;
            let bad = |msg: String| data_err(path, format!("row {line}: {msg}"));
            if row.len() != names.len() {
                return Err(bad(format!(
                    "{} fields where the header has {}",
                    row.len(),
                    names.len()
                )));
            }
            let cell = parse_cell(&row[..4]).map_err(bad)?;
            let pos = grid
                .position(&cell)
                .ok_or_else(|| bad(format!("{cell} is not a cell of the sweep in sweep.json")))?;
            let values = row[4..].iter().map(|f| f.to_string()).collect();
            if r.rows.insert(pos, (cell, values)).is_some() {
                return Err(bad(format!("{cell} appears twice")));
            }
        }
        Ok(r)
    }

    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The report fields (after the cell columns); empty before the first row.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn contains(&self, cell: &Cell) -> bool {
        self.grid
            .position(cell)
            .is_some_and(|p| self.rows.contains_key(&p))
    }

    /// Adds the row of a finished cell. The first row fixes the fields; a later row with other
    /// fields, a cell outside the grid or one already done is a runner error.
    pub fn insert(&mut self, cell: &Cell, row: Row) -> Result<()> {
        let pos = self
            .grid
            .position(cell)
            .ok_or_else(|| Error::Runner(format!("{cell} is not a cell of this sweep")))?;
        if self.rows.contains_key(&pos) {
            return Err(Error::Runner(format!("{cell} was reported twice")));
        }
        let names: Vec<String> = row.iter().map(|(n, _)| n.clone()).collect();
        if let Some(n) = names.iter().find(|n| CELL_COLUMNS.contains(&n.as_str())) {
            return Err(Error::Runner(format!(
                "{cell}: the report field {n:?} has the name of a cell column; the runner must \
                 drop or rename it"
            )));
        }
        if self.rows.is_empty() && self.fields.is_empty() {
            let mut seen = std::collections::HashSet::new();
            if let Some(n) = names.iter().find(|n| !seen.insert(n.as_str())) {
                return Err(Error::Runner(format!(
                    "{cell}: the field {n:?} appears twice"
                )));
            }
            self.fields = names;
        } else if names != self.fields {
            return Err(Error::Runner(format!(
                "{cell} reports the fields [{}] but the earlier rows have [{}]",
                names.join(", "),
                self.fields.join(", ")
            )));
        }
        let values = row.iter().map(|(_, v)| encode(v)).collect();
        self.rows.insert(pos, (*cell, values));
        Ok(())
    }

    /// The value of `column` in the cell's row as a number: `None` if the cell is not done or
    /// the value is empty (null) or not a finite number.
    pub fn number(&self, cell: &Cell, column: &str) -> Option<f64> {
        let k = self.fields.iter().position(|f| f == column)?;
        let (_, values) = self.rows.get(&self.grid.position(cell)?)?;
        unquote(&values[k])
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }

    /// The whole `results.csv`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header = CELL_COLUMNS.iter().map(|c| c.to_string());
        let header: Vec<String> = header.chain(self.fields.iter().map(|f| quote(f))).collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for (cell, values) in self.rows.values() {
            out.push_str(&format!(
                "{},{},{},{}",
                cell.method.as_str(),
                cell.neurons,
                cell.nonzeros,
                cell.seed
            ));
            for v in values {
                out.push(',');
                out.push_str(v);
            }
            out.push('\n');
        }
        out
    }

    /// Adds the rows of another folder's results (`from` names it in messages). A cell in
    /// both must have the same values; the fields must agree.
    pub fn merge(&mut self, other: &Results, from: &Path) -> Result<()> {
        let path = from.join(RESULTS_FILE);
        if other.rows.is_empty() {
            return Ok(());
        }
        if self.rows.is_empty() && self.fields.is_empty() {
            self.fields = other.fields.clone();
        } else if self.fields != other.fields {
            return Err(data_err(
                &path,
                format!(
                    "its fields [{}] differ from the other folders' [{}]",
                    other.fields.join(", "),
                    self.fields.join(", ")
                ),
            ));
        }
        for (pos, (cell, values)) in &other.rows {
            match self.rows.get(pos) {
                Some((_, mine)) if mine != values => {
                    let k = mine
                        .iter()
                        .zip(values)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    return Err(data_err(
                        &path,
                        format!(
                            "{cell} is also in another folder with a different {} ({} vs {}): \
                             the shards overlap; merge only one of them",
                            self.fields[k], values[k], mine[k]
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    self.rows.insert(*pos, (*cell, values.clone()));
                }
            }
        }
        Ok(())
    }
}

fn parse_cell(f: &[&str]) -> std::result::Result<Cell, String> {
    let text: Vec<String> = f.iter().map(|x| unquote(x)).collect();
    let num = |i: usize| -> std::result::Result<u64, String> {
        text[i]
            .parse()
            .map_err(|_| format!("{} {:?} is not a number", CELL_COLUMNS[i], text[i]))
    };
    Ok(Cell {
        method: Method::parse(&text[0]).ok_or_else(|| format!("unknown method {:?}", text[0]))?,
        neurons: num(1)? as usize,
        nonzeros: num(2)? as usize,
        seed: num(3)?,
    })
}

/// Rewrites `results.csv` atomically, refusing to overwrite rows another process added: two
/// jobs writing one folder would each drop the other's rows.
pub struct ResultsFile {
    path: PathBuf,
    /// What the file held when this process last read or wrote it.
    last: Option<String>,
}

impl ResultsFile {
    /// Opens `dir/results.csv` and reads what is done.
    pub fn open(dir: &Path, grid: &Grid) -> Result<(ResultsFile, Results)> {
        let path = dir.join(RESULTS_FILE);
        let last = read_optional(&path)?;
        let results = Results::load(&path, grid)?;
        Ok((ResultsFile { path, last }, results))
    }

    pub fn write(&mut self, results: &Results) -> Result<()> {
        let now = read_optional(&self.path)?;
        if now != self.last {
            return Err(Error::invalid(
                Param::Output,
                format!(
                    "{} was changed by another process: give each shard its own output folder",
                    self.path.display()
                ),
            ));
        }
        let text = results.to_csv();
        crate::output::write_bytes(&self.path, text.as_bytes())?;
        self.last = Some(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::grid::Task;
    use serde_json::json;

    const AWKWARD: [&str; 12] = [
        "",
        "plain",
        "a,b",
        "say \"hi\"",
        "line\nbreak",
        "cr\r\nlf",
        " lead",
        "trail ",
        "ünï ∆",
        "\"",
        ",",
        "\"\"",
    ];

    #[test]
    fn csv_quoting_round_trips() {
        let line: Vec<String> = AWKWARD.iter().map(|s| quote(s)).collect();
        let text = format!("{}\n{}\n", line.join(","), line.join(","));
        let records = split_csv(&text).unwrap();
        assert_eq!(records.len(), 2);
        for r in records {
            let back: Vec<String> = r.iter().map(|f| unquote(f)).collect();
            assert_eq!(back, AWKWARD);
        }
        // Only what needs quotes gets them; an empty string differs from null.
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(encode(&Value::Null), "");
        assert_eq!(encode(&json!([20.0, 0.05])), "\"[20.0,0.05]\"");
        // CRLF line ends and a missing last line end read the same.
        assert_eq!(
            split_csv("a,b\r\n1,\"x\"").unwrap(),
            [["a", "b"], ["1", "\"x\""]]
        );
    }

    #[test]
    fn malformed_csv_is_refused() {
        for bad in ["a,\"b\nc", "a,b\"c\n", "\"a\"b,c\n"] {
            assert!(split_csv(bad).is_err(), "{bad:?}");
        }
    }

    fn grid() -> Grid {
        Grid::new(Task::Inr, vec![Method::Iht], vec![10], vec![5, 7], vec![0]).unwrap()
    }

    #[test]
    fn rows_read_back_exactly() {
        let g = grid();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        let floats = [
            0.1 + 0.2,
            1e-300,
            f64::MAX,
            5e-324,
            -0.0,
            123456.789,
            1.0 / 3.0,
        ];
        let mut r = Results::new(g.clone());
        for (k, cell) in g.cells().iter().enumerate() {
            let mut row: Row = floats
                .iter()
                .enumerate()
                .map(|(i, &x)| (format!("f{i}"), json!(if k == 0 { x } else { -x })))
                .collect();
            row.push(("big".into(), json!(u64::MAX - k as u64)));
            row.push(("neg".into(), json!(i64::MIN)));
            row.push(("text".into(), json!(AWKWARD[k + 4])));
            row.push(("none".into(), Value::Null));
            r.insert(cell, row).unwrap();
        }
        let csv = r.to_csv();
        std::fs::write(&path, &csv).unwrap();
        let back = Results::load(&path, &g).unwrap();
        assert_eq!(back.to_csv(), csv);
        for (k, cell) in g.cells().iter().enumerate() {
            for (i, &x) in floats.iter().enumerate() {
                let want = if k == 0 { x } else { -x };
                let got = back.number(cell, &format!("f{i}")).unwrap();
                assert_eq!(got.to_bits(), want.to_bits(), "f{i} of {cell}");
            }
            assert_eq!(back.number(cell, "none"), None);
            let big = format!(",{},", u64::MAX - k as u64);
            assert!(csv.contains(&big), "{csv}");
        }
    }

    #[test]
    fn rows_must_keep_their_shape() {
        let g = grid();
        let cells = g.cells();
        let mut r = Results::new(g);
        r.insert(&cells[0], vec![("psnr".into(), json!(1.0))])
            .unwrap();
        let e = r
            .insert(&cells[1], vec![("psnr_8bit".into(), json!(1.0))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("psnr_8bit") && e.contains("[psnr]"), "{e}");
        let e = r
            .insert(&cells[0], vec![("psnr".into(), json!(1.0))])
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let mut r = Results::new(grid());
        let e = r
            .insert(&cells[0], vec![("neurons".into(), json!(10))])
            .unwrap_err();
        assert!(e.to_string().contains("cell column"), "{e}");
    }

    #[test]
    fn a_file_with_foreign_cells_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        let g = grid();
        std::fs::write(&path, "method,neurons,nonzeros,seed,psnr\niht,10,6,0,1.5\n").unwrap();
        let e = Results::load(&path, &g).unwrap_err().to_string();
        assert!(
            e.contains("iht m=10 s=6 seed=0") && e.contains("row 2"),
            "{e}"
        );
        std::fs::write(
            &path,
            "method,neurons,nonzeros,seed,psnr\niht,10,5,0,1\niht,10,5,0,1\n",
        )
        .unwrap();
        let e = Results::load(&path, &g).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        std::fs::write(&path, "m,n,s,seed\n").unwrap();
        assert!(Results::load(&path, &g).is_err());
    }

    #[test]
    fn another_writer_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let g = grid();
        let (mut file, mut r) = ResultsFile::open(dir.path(), &g).unwrap();
        r.insert(&g.cells()[0], vec![("psnr".into(), json!(1.0))])
            .unwrap();
        file.write(&r).unwrap();
        std::fs::write(
            dir.path().join(RESULTS_FILE),
            "method,neurons,nonzeros,seed\n",
        )
        .unwrap();
        let e = file.write(&r).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
    }
}
