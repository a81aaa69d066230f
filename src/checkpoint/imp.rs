//! The checkpoint of an IMP run: taken at round boundaries, where the whole state is the masks
//! of the next round (its weights are the rewound initial ones and Adam starts afresh) and the
//! rounds before it (`imp::ImpResume`).

use super::{json, open, parse, read, serialize, VERSION};
use crate::error::{Error, Result};
use crate::imp::prune::Masks;
use crate::imp::{ImpResume, RoundSummary};
use safetensors::tensor::Dtype;
use std::path::Path;

pub const FORMAT: &str = "spinr-imp-checkpoint";
const KEYS: [&str; 9] = [
    "format",
    "format_version",
    "spinr_version",
    "run",
    "round",
    "rounds",
    "epochs",
    "seconds",
    "extra",
];

/// One saved round boundary of an IMP run.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpCheckpoint {
    /// What is being fitted (compared field by field on resume).
    pub run: serde_json::Value,
    pub resume: ImpResume,
    /// Seconds spent before this point (over every earlier run).
    pub seconds: f64,
    /// What the caller needs beyond the state (not compared; e.g. a sweep's dense accuracy
    /// of round 0).
    pub extra: serde_json::Value,
}

impl ImpCheckpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let r = &self.resume;
        let u: Vec<u8> = r.masks.u.iter().map(|&b| b as u8).collect();
        let v: Vec<u8> = r.masks.v.iter().map(|&b| b as u8).collect();
        serialize(
            FORMAT,
            VERSION,
            &self.run,
            &[
                ("round", json(&r.round)),
                ("rounds", json(&r.rounds)),
                ("epochs", json(&r.epochs)),
                ("seconds", json(&self.seconds)),
                ("extra", self.extra.to_string()),
            ],
            &[("mask_u", Dtype::U8, &u), ("mask_v", Dtype::U8, &v)],
        )
    }

    /// Parses and checks checkpoint bytes; the error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (st, meta) = open(bytes, FORMAT, &KEYS)?;
        let run: serde_json::Value = parse(&meta, "run")?;
        let round: usize = parse(&meta, "round")?;
        let rounds: Vec<RoundSummary> = parse(&meta, "rounds")?;
        let epochs: usize = parse(&meta, "epochs")?;
        let seconds: f64 = parse(&meta, "seconds")?;
        let extra: serde_json::Value = parse(&meta, "extra")?;
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(format!("seconds = {seconds} is not a duration"));
        }
        if rounds.len() != round || rounds.iter().enumerate().any(|(i, r)| r.round != i) {
            return Err("the round history does not match the round".into());
        }
        let mask = |name: &str| -> std::result::Result<Vec<bool>, String> {
            let t = st
                .tensor(name)
                .map_err(|_| format!("tensor {name} is missing"))?;
            if t.dtype() != Dtype::U8 || t.shape().len() != 1 {
                return Err(format!("tensor {name} is not a vector of U8"));
            }
            t.data()
                .iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(format!("tensor {name} holds {b}, not 0 or 1")),
                })
                .collect()
        };
        let masks = Masks {
            u: mask("mask_u")?,
            v: mask("mask_v")?,
        };
        Ok(ImpCheckpoint {
            run,
            resume: ImpResume {
                round,
                masks,
                rounds,
                epochs,
            },
            seconds,
            extra,
        })
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::output::write_bytes(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_bytes(&read(path)?).map_err(|msg| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_the_other_kind() {
        let c = ImpCheckpoint {
            run: serde_json::json!({"neurons": 4}),
            resume: ImpResume {
                round: 2,
                masks: Masks {
                    u: vec![true, false, true],
                    v: vec![false, true],
                },
                rounds: (0..2)
                    .map(|round| RoundSummary {
                        round,
                        nonzeros: 5 - round,
                        loss: 0.1 + round as f64 / 3.0,
                        epochs: 3,
                        seconds: 0.25,
                    })
                    .collect(),
                epochs: 6,
            },
            seconds: 1.5,
            extra: serde_json::json!({"dense": 0.5}),
        };
        let bytes = c.to_bytes().unwrap();
        assert_eq!(ImpCheckpoint::from_bytes(&bytes).unwrap(), c);
        assert_eq!(super::super::format_of(&bytes).as_deref(), Some(FORMAT));
        let e = super::super::Checkpoint::from_bytes(&bytes).unwrap_err();
        assert!(e.contains("another kind"), "{e}");
        assert!(ImpCheckpoint::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}
