//! `sweep.json`: the grid and options of a sweep. Written when a sweep starts; a run with a
//! different manifest is refused rather than mixed into the folder, and only folders with
//! byte-identical manifests merge.

use super::grid::{Grid, Method, Task};
use super::store::{data_err, read_optional, RESULTS_FILE};
use crate::error::{Error, Param, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

pub const MANIFEST_FILE: &str = "sweep.json";
/// The `format` of `sweep.json`.
pub const MANIFEST_FORMAT: &str = "spinr-sweep/1";

/// The grid and the options of a sweep: what `sweep.json` holds. Two runs with different
/// manifests never write into one folder, and shards merge only if their manifests are equal.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub grid: Grid,
    /// What the runner's flags were (opaque here; compared as a whole).
    pub options: Value,
    pub spinr_version: String,
}

/// `sweep.json` as written; the key order is the file's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    format: String,
    task: Task,
    methods: Vec<Method>,
    neurons: Vec<usize>,
    nonzeros: Vec<usize>,
    seeds: Vec<u64>,
    options: Value,
    spinr_version: String,
}

impl Manifest {
    /// The manifest of a sweep run by this build of spinr.
    pub fn new(grid: Grid, options: Value) -> Manifest {
        Manifest {
            grid,
            options,
            spinr_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn to_json(&self) -> String {
        let g = &self.grid;
        let file = ManifestFile {
            format: MANIFEST_FORMAT.into(),
            task: g.task(),
            methods: g.methods().to_vec(),
            neurons: g.neurons().to_vec(),
            nonzeros: g.nonzeros().to_vec(),
            seeds: g.seeds().to_vec(),
            options: self.options.clone(),
            spinr_version: self.spinr_version.clone(),
        };
        let mut s = serde_json::to_string_pretty(&file).expect("manifest serialises");
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> std::result::Result<Manifest, String> {
        let f: ManifestFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if f.format != MANIFEST_FORMAT {
            return Err(format!(
                "format {:?} is not {MANIFEST_FORMAT:?} (written by another spinr)",
                f.format
            ));
        }
        let grid = Grid::new(f.task, f.methods, f.neurons, f.nonzeros, f.seeds)
            .map_err(|e| e.to_string())?;
        Ok(Manifest {
            grid,
            options: f.options,
            spinr_version: f.spinr_version,
        })
    }

    /// Reads `dir/sweep.json`: `None` if there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        match read_optional(&path)? {
            None => Ok(None),
            Some(text) => Manifest::from_json(&text)
                .map(Some)
                .map_err(|e| data_err(&path, e)),
        }
    }

    /// What differs from `other` ("neurons: [10, 50] vs [10, 50, 200]"), for messages. The
    /// files are compared byte for byte; this only explains a difference.
    pub fn difference(&self, other: &Manifest) -> String {
        let a: Value = serde_json::from_str(&self.to_json()).expect("valid json");
        let b: Value = serde_json::from_str(&other.to_json()).expect("valid json");
        first_difference("", &a, &b).unwrap_or_else(|| "the files differ".into())
    }
}

/// The first key path where two JSON values differ.
fn first_difference(at: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(&path, u, v),
                    (u, v) => Some(format!("{path}: {} vs {}", show(u), show(v))),
                }
            })
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".into(), |v| v.to_string())
}

/// Writes `dir/sweep.json`, or checks that the one there describes the same sweep. A folder
/// with results but no manifest is refused: nothing says which grid they belong to.
pub fn claim_dir(dir: &Path, manifest: &Manifest) -> Result<()> {
    claim_dir_as(dir, manifest, &manifest.to_json())
}

/// [`claim_dir`] with the manifest's text as read from another folder (a merge keeps the
/// shards' bytes rather than writing them anew).
pub(crate) fn claim_dir_as(dir: &Path, manifest: &Manifest, text: &str) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    match read_optional(&path)? {
        Some(old) if old == text => Ok(()),
        Some(old) => {
            let why = match Manifest::from_json(&old) {
                Ok(m) => format!("there vs this command: {}", m.difference(manifest)),
                Err(e) => format!("it cannot be read ({e})"),
            };
            Err(Error::invalid(
                Param::Output,
                format!(
                    "{} describes a different sweep ({why}); rerun with the same grid and \
                     options to resume it, or give a new output folder",
                    path.display()
                ),
            ))
        }
        None if dir.join(RESULTS_FILE).exists() => Err(Error::invalid(
            Param::Output,
            format!(
                "{} holds a {RESULTS_FILE} but no {MANIFEST_FILE}, so nothing says which sweep it \
                 belongs to; give a new output folder",
                dir.display()
            ),
        )),
        None => crate::output::write_bytes(&path, text.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(seeds: Vec<u64>, options: Value) -> Manifest {
        let grid = Grid::new(Task::Plant, vec![Method::Imp], vec![5], vec![9], seeds).unwrap();
        Manifest::new(grid, options)
    }

    #[test]
    fn reads_back_what_it_writes_and_explains_differences() {
        let m = manifest(vec![2, 1], json!({"sigma": [0.1, 20.0], "gates": "convex"}));
        let text = m.to_json();
        assert!(text.starts_with("{\n  \"format\": \"spinr-sweep/1\",\n  \"task\": \"plant\""));
        assert_eq!(Manifest::from_json(&text).unwrap(), m);
        let other = manifest(
            vec![1, 2, 3],
            json!({"sigma": [0.1, 20.0], "gates": "convex"}),
        );
        assert_eq!(m.difference(&other), "seeds: [1,2] vs [1,2,3]");
        let other = manifest(vec![1, 2], json!({"sigma": [0.1, 20.5], "gates": "convex"}));
        assert_eq!(
            m.difference(&other),
            "options.sigma: [0.1,20.0] vs [0.1,20.5]"
        );
        let other = manifest(vec![1, 2], json!({"sigma": [0.1, 20.0]}));
        assert_eq!(
            m.difference(&other),
            "options.gates: \"convex\" vs (absent)"
        );
        let e = Manifest::from_json(&text.replace("spinr-sweep/1", "spinr-sweep/9"));
        assert!(e.unwrap_err().contains("spinr-sweep/9"));
    }
}
