//! Checkpoint files: where an IHT fit stood at a pause, so that it can go on later
//! (ARCHITECTURE.md, "Checkpoints").
//!
//! A safetensors file (written atomically, like every output): the weights `W` and the best
//! model as `(index, value)` tensors, and in its metadata the loop position, the learner's
//! counters, the fitting time so far and a description of the run (`run`: the caller's
//! options and the identity of its data, compared on resume). Floats in the JSON metadata
//! round-trip exactly (serde_json's `float_roundtrip`). A checkpoint is only ever read by the
//! spinr version that wrote it: anything else is refused rather than mixed.

pub mod imp;

/// The `format` of checkpoint bytes ([`FORMAT`] or [`imp::FORMAT`]), if they have one.
pub use crate::model::format_of;
pub use imp::ImpCheckpoint;

use crate::error::{Error, Result};
use crate::iht::{IhtCounters, IhtState};
use crate::model::{from_le, le_bytes};
use crate::sparse::SparseVec;
use crate::train::LoopState;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "spinr-checkpoint";
pub const FORMAT_VERSION: u32 = 1;
const VERSION: &str = env!("CARGO_PKG_VERSION");
const KEYS: [&str; 7] = [
    "format",
    "format_version",
    "spinr_version",
    "run",
    "at",
    "counters",
    "seconds",
];

/// One saved pause of a fit.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// What is being fitted, as the caller describes it (compared field by field on resume).
    pub run: serde_json::Value,
    pub at: LoopState,
    pub state: IhtState,
    /// Seconds spent fitting before this point (over every earlier run of the fit).
    pub seconds: f64,
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_as(VERSION)
    }

    fn to_bytes_as(&self, version: &str) -> Result<Vec<u8>> {
        let (w, best, prev) = (&self.state.w, &self.state.best, &self.state.prev);
        let bufs = [
            le_bytes(&w.indices, u32::to_le_bytes),
            le_bytes(&w.values, f32::to_le_bytes),
            le_bytes(&best.indices, u32::to_le_bytes),
            le_bytes(&best.values, f32::to_le_bytes),
            le_bytes(&prev.indices, u32::to_le_bytes),
            le_bytes(&prev.values, f32::to_le_bytes),
        ];
        serialize(
            FORMAT,
            version,
            &self.run,
            &[
                ("at", json(&self.at)),
                ("counters", json(&self.state.counters)),
                ("seconds", json(&self.seconds)),
            ],
            &[
                ("w_indices", Dtype::U32, &bufs[0]),
                ("w_values", Dtype::F32, &bufs[1]),
                ("best_indices", Dtype::U32, &bufs[2]),
                ("best_values", Dtype::F32, &bufs[3]),
                ("prev_indices", Dtype::U32, &bufs[4]),
                ("prev_values", Dtype::F32, &bufs[5]),
            ],
        )
    }

    /// Parses and checks checkpoint bytes; the error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (st, meta) = open(bytes, FORMAT, &KEYS)?;
        let meta = &meta;
        let run: serde_json::Value = parse(meta, "run")?;
        let at: LoopState = parse(meta, "at")?;
        let counters: IhtCounters = parse(meta, "counters")?;
        let seconds: f64 = parse(meta, "seconds")?;
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(format!("seconds = {seconds} is not a duration"));
        }
        if at.history.len() != at.epoch || at.history.iter().any(|l| !l.is_finite()) {
            return Err("the loss history does not match the epoch".into());
        }
        let pairs = |name: &str| -> std::result::Result<SparseVec, String> {
            let get = |t: &str, dtype| {
                let v = st
                    .tensor(&format!("{name}_{t}"))
                    .map_err(|_| format!("tensor {name}_{t} is missing"))?;
                if v.dtype() != dtype || v.shape().len() != 1 {
                    return Err(format!("tensor {name}_{t} is not a vector of {dtype:?}"));
                }
                Ok(v.data().to_vec())
            };
            let idx = get("indices", Dtype::U32)?;
            let val = get("values", Dtype::F32)?;
            if idx.len() != val.len() {
                return Err(format!("{name}: indices and values differ in length"));
            }
            let indices = from_le(&idx, u32::from_le_bytes);
            let values = from_le(&val, f32::from_le_bytes);
            if indices.windows(2).any(|p| p[0] >= p[1]) {
                return Err(format!("{name}: indices are not strictly increasing"));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(format!("{name}: a weight is not finite"));
            }
            Ok(SparseVec { indices, values })
        };
        let state = IhtState {
            w: pairs("w")?,
            best: pairs("best")?,
            counters,
            prev: pairs("prev")?,
        };
        Ok(Checkpoint {
            run,
            at,
            state,
            seconds,
        })
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::output::write_bytes(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read(path)?;
        Self::from_bytes(&bytes).map_err(|msg| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Refuses to continue a run with different options or data: names every field of `run`
    /// that differs (`now` is the same description of the run asked for).
    pub fn check_run(&self, now: &serde_json::Value) -> std::result::Result<(), String> {
        check_run(&self.run, now)
    }
}

/// Refuses to continue a run with different options or data: names every field of the saved
/// description `saved` that differs from `now` (the caller says how to go on).
pub fn check_run(
    saved: &serde_json::Value,
    now: &serde_json::Value,
) -> std::result::Result<(), String> {
    if saved == now {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let (a, b) = (
        saved.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("-".into(), |v| v.to_string());
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} in the checkpoint, {} now",
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect();
    Err(format!(
        "it is a checkpoint of a different run ({})",
        diffs.join("; ")
    ))
}

/// Checkpoint bytes of `format`: the shared metadata (format, versions, `run`) and `fields`,
/// and 1-d tensors of `(name, dtype, little-endian bytes)`; the header in sorted order.
fn serialize(
    format: &str,
    version: &str,
    run: &serde_json::Value,
    fields: &[(&str, String)],
    tensors: &[(&str, Dtype, &[u8])],
) -> Result<Vec<u8>> {
    let mut meta: HashMap<String, String> = [
        ("format", format.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("spinr_version", version.to_string()),
        ("run", run.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    meta.extend(fields.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let ser = |e: safetensors::SafeTensorError| Error::Io {
        path: "checkpoint".into(),
        msg: format!("cannot serialise the checkpoint: {e}"),
    };
    let views = tensors
        .iter()
        .map(|&(name, dtype, bytes)| {
            let len = 8 * bytes.len() / dtype.bitsize();
            Ok((name, TensorView::new(dtype, vec![len], bytes).map_err(ser)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::model::canonical(
        safetensors::serialize(views, Some(meta)).map_err(ser)?,
    ))
}

/// The format and version checks every checkpoint kind shares.
fn check_format(meta: &HashMap<String, String>, format: &str) -> std::result::Result<(), String> {
    match meta.get("format") {
        Some(f) if f == format => {}
        Some(f) => {
            return Err(format!(
                "format is {f:?}, expected {format:?} (a checkpoint of another kind of run)"
            ))
        }
        None => return Err("metadata key \"format\" is missing".into()),
    }
    let get = |k: &str| meta.get(k).map_or("?", |v| v.as_str());
    if get("spinr_version") != VERSION || get("format_version") != FORMAT_VERSION.to_string() {
        return Err(format!(
            "it was written by spinr {} (checkpoint format {}); this is spinr {VERSION} \
             (format {FORMAT_VERSION}), which does not continue another version's fits: \
             finish it with that version, or start over without --resume",
            get("spinr_version"),
            get("format_version")
        ));
    }
    Ok(())
}

/// The safetensors view and metadata of checkpoint bytes of `format` (this version's) with
/// exactly `keys`.
fn open<'a>(
    bytes: &'a [u8],
    format: &str,
    keys: &[&str],
) -> std::result::Result<(safetensors::SafeTensors<'a>, HashMap<String, String>), String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a complete safetensors file ({e})"))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header
        .metadata()
        .clone()
        .ok_or("no metadata: this is not a spinr checkpoint")?;
    check_format(&meta, format)?;
    if let Some(k) = meta.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!("unknown metadata key {k:?}"));
    }
    if let Some(k) = keys.iter().find(|k| !meta.contains_key(**k)) {
        return Err(format!("metadata key {k:?} is missing"));
    }
    Ok((st, meta))
}

fn parse<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    k: &str,
) -> std::result::Result<T, String> {
    serde_json::from_str(&meta[k]).map_err(|e| format!("metadata {k}: {e}"))
}

/// Reads a checkpoint file's bytes, naming the file on failure.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("checkpoint metadata serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iht::Gating;

    fn sample() -> Checkpoint {
        Checkpoint {
            run: serde_json::json!({"neurons": 5, "sigma": [0.1, 1.0 / 3.0]}),
            at: LoopState {
                epoch: 2,
                batch: 1,
                updates: 9,
                best_loss: Some(0.1 + 0.2),
                history: vec![1.0 / 3.0, 0.1 + 0.2],
                planned: Some(40),
            },
            state: IhtState {
                w: SparseVec::from_pairs(vec![(3, 0.5), (1, -1.0 / 3.0)]),
                best: SparseVec::from_pairs(vec![(7, f32::MIN_POSITIVE)]),
                counters: IhtCounters {
                    w_empty: false,
                    updates: 9,
                    gating: Gating::SelfGated,
                    best_gating: Gating::Random,
                    rescues: 1,
                    step: Some(0.375),
                },
                prev: SparseVec::from_pairs(vec![(1, 0.25)]),
            },
            seconds: 12.25,
        }
    }

    #[test]
    fn round_trips_exactly() {
        let c = sample();
        let back = Checkpoint::from_bytes(&c.to_bytes().unwrap()).unwrap();
        assert_eq!(back, c);
        // Bit for bit, not just equal as floats.
        assert_eq!(
            back.at.best_loss.unwrap().to_bits(),
            (0.1f64 + 0.2).to_bits()
        );
    }

    #[test]
    fn refuses_other_versions_truncations_and_other_runs() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(Checkpoint::from_bytes(&bytes[..cut]).is_err());
        }
        let other = sample().to_bytes_as("0.0.0-other").unwrap();
        let e = Checkpoint::from_bytes(&other).unwrap_err();
        assert!(
            e.contains("0.0.0-other") && e.contains("without --resume"),
            "{e}"
        );
        let c = sample();
        let now = serde_json::json!({"neurons": 6, "sigma": [0.1, 1.0 / 3.0]});
        let e = c.check_run(&now).unwrap_err();
        assert!(e.contains("neurons: 5 in the checkpoint, 6 now"), "{e}");
        assert!(!e.contains("sigma"), "{e}");
        assert!(c.check_run(&c.run).is_ok());
    }
}
