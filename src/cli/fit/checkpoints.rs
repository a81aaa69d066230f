//! `spinr fit --checkpoint-every` and `--resume`: what a checkpoint of an image fit records of
//! the run (so that `--resume DIR` alone can rebuild it, and a different run is refused), and
//! the checkpointer that saves one every so often and at an interrupt.

use super::{ImageArgs, Resize};
use crate::checkpoint::{self, Checkpoint, ImpCheckpoint};
use crate::error::Error;
use crate::iht::{Checkpointer, IhtState, Resume};
use crate::imp::ImpResume;
use crate::inr::fit::FitOptions;
use crate::inr::Image;
use crate::train::LoopState;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The checkpoint, inside the output folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// An image fit as its checkpoint records it: the options, where the image came from, and the
/// identity of the pixels actually fitted (size and a hash, so a changed file is noticed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRun {
    /// The image file, absolute (a resume from another folder finds it).
    pub image: PathBuf,
    pub index: Option<usize>,
    /// `WxH` when the image was resampled (`--resize`).
    pub resize: Option<String>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// FNV-1a of the fitted values' bits.
    pub pixels: String,
    pub options: FitOptions,
    /// A luma-chroma fit: the planes finished before the one being fitted, in order (their
    /// models are `plane-NAME.safetensors` in the output folder). `None`: one network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planes_done: Option<Vec<DonePlane>>,
}

/// A finished plane of a luma-chroma fit, as its checkpoints record it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DonePlane {
    /// Epochs run.
    pub iterations: usize,
    /// Fitting time of the plane.
    pub seconds: f64,
    /// The plane fit's peak working memory on its backend.
    pub peak_device_bytes: u64,
}

impl ImageRun {
    pub fn new(path: &Path, which: &ImageArgs, image: &Image, options: &FitOptions) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in &image.data {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        ImageRun {
            image: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            index: which.index,
            resize: which
                .resize
                .map(|_| format!("{}x{}", image.width, image.height)),
            height: image.height,
            width: image.width,
            channels: image.channels,
            pixels: format!("{h:016x}"),
            options: options.clone(),
            planes_done: None,
        }
    }

    /// The image arguments that load the same pixels again.
    pub fn which(&self) -> ImageArgs {
        ImageArgs {
            index: self.index,
            resize: self.resize.as_ref().map(|_| Resize::Exact {
                width: self.width,
                height: self.height,
            }),
        }
    }

    /// As the checkpoint compares it: the options' fields beside the image's, so that a
    /// refusal names the option (`neurons`, `seed`, …) that differs. The file's path is left
    /// out: the same pixels from a moved file are the same fit.
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serialises");
        let obj = v.as_object_mut().expect("a struct");
        obj.remove("image");
        if let Some(serde_json::Value::Object(o)) = obj.remove("options") {
            obj.extend(o);
        }
        v
    }
}

/// A saved fit: an IHT fit at a pause, or an IMP run at a round boundary.
#[derive(Clone, Debug)]
pub enum Saved {
    Iht(Checkpoint),
    Imp(ImpCheckpoint),
}

impl Saved {
    pub fn run(&self) -> &serde_json::Value {
        match self {
            Saved::Iht(c) => &c.run,
            Saved::Imp(c) => &c.run,
        }
    }

    /// Where an IHT fit goes on from, if this is one.
    pub fn iht_resume(&self) -> Option<Resume> {
        match self {
            Saved::Iht(c) => Some(Resume {
                at: c.at.clone(),
                state: c.state.clone(),
            }),
            Saved::Imp(_) => None,
        }
    }

    /// Where an IMP run goes on from, if this is one.
    pub fn imp_resume(&self) -> Option<ImpResume> {
        match self {
            Saved::Imp(c) => Some(c.resume.clone()),
            Saved::Iht(_) => None,
        }
    }

    /// Fitting time before the checkpoint.
    pub fn seconds(&self) -> f64 {
        match self {
            Saved::Iht(c) => c.seconds,
            Saved::Imp(c) => c.seconds,
        }
    }
}

/// Reads a checkpoint file of either kind.
pub fn read(path: &Path) -> crate::Result<Saved> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    Ok(
        if checkpoint::format_of(&bytes).as_deref() == Some(checkpoint::imp::FORMAT) {
            Saved::Imp(ImpCheckpoint::from_bytes(&bytes).map_err(bad)?)
        } else {
            Saved::Iht(Checkpoint::from_bytes(&bytes).map_err(bad)?)
        },
    )
}

/// Reads the checkpoint of `dir`.
pub fn load(dir: &Path) -> anyhow::Result<(Saved, ImageRun)> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Err(Error::arg(
            "--resume",
            format!(
                "{} has no {CHECKPOINT_FILE}: give the --out folder of a fit that was stopped \
                 (fits save one every --checkpoint-every seconds and when interrupted)",
                dir.display()
            ),
        )
        .into());
    }
    let bad = |msg: String| Error::Checkpoint {
        path: path.clone(),
        msg,
    };
    let saved = read(&path)?;
    let run: ImageRun = serde_json::from_value(saved.run().clone())
        .map_err(|e| bad(format!("it is not the checkpoint of an image fit ({e})")))?;
    Ok((saved, run))
}

/// The `run` field of an image fit's checkpoint: all that is needed to rebuild the fit.
pub fn describe(run: &ImageRun) -> serde_json::Value {
    serde_json::to_value(run).expect("serialises")
}

/// Refuses a resume whose options or pixels differ from the checkpoint's (`saved`).
pub fn check(dir: &Path, saved: &ImageRun, now: &ImageRun) -> anyhow::Result<()> {
    checkpoint::check_run(&saved.to_value(), &now.to_value()).map_err(|msg| {
        Error::Checkpoint {
            path: dir.join(CHECKPOINT_FILE),
            msg: format!(
                "{msg}; resume with the checkpoint's own options (`--resume DIR` alone), or \
                 start over without --resume"
            ),
        }
        .into()
    })
}

/// Saves a checkpoint every `every` and whenever a stop was asked for (then stops the fit).
pub struct Saver {
    path: PathBuf,
    run: serde_json::Value,
    every: Duration,
    /// Fitting time of the earlier runs of this fit.
    earlier_seconds: f64,
    start: Instant,
    last: Instant,
    stop_requested: fn() -> bool,
    /// The last state saved (the best model survives a lost device through it).
    pub saved: Option<(LoopState, IhtState)>,
    /// Why a save failed (the fit then stopped).
    pub error: Option<Error>,
}

impl Saver {
    pub fn new(
        path: PathBuf,
        run: serde_json::Value,
        every: Duration,
        earlier_seconds: f64,
        stop_requested: fn() -> bool,
    ) -> Self {
        let now = Instant::now();
        Saver {
            path,
            run,
            every,
            earlier_seconds,
            start: now,
            last: now,
            saved: None,
            error: None,
            stop_requested,
        }
    }

    /// Seconds of fitting over every run so far.
    pub fn seconds(&self) -> f64 {
        self.earlier_seconds + self.start.elapsed().as_secs_f64()
    }
}

impl Checkpointer for Saver {
    fn due(&mut self, _: &LoopState) -> bool {
        (self.stop_requested)() || self.last.elapsed() >= self.every
    }

    fn save(&mut self, at: &LoopState, state: IhtState) -> crate::Result<ControlFlow<()>> {
        let c = Checkpoint {
            run: self.run.clone(),
            at: at.clone(),
            state,
            seconds: self.seconds(),
        };
        if let Err(e) = c.save(&self.path) {
            // The fit stops: going on without the checkpoint it was asked to keep would risk
            // more than it saves.
            self.error = Some(e);
            return Ok(ControlFlow::Break(()));
        }
        self.last = Instant::now();
        self.saved = Some((c.at, c.state));
        Ok(if (self.stop_requested)() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

/// Saves an IMP run's round boundaries to `path` (`None`: nowhere).
pub struct ImpSaver {
    path: Option<PathBuf>,
    run: serde_json::Value,
    earlier_seconds: f64,
    start: Instant,
}

impl ImpSaver {
    pub fn new(path: Option<PathBuf>, run: serde_json::Value, earlier_seconds: f64) -> Self {
        ImpSaver {
            path,
            run,
            earlier_seconds,
            start: Instant::now(),
        }
    }

    /// Saves one boundary, with what the caller needs beside it (`extra`).
    pub fn save(&self, r: &ImpResume, extra: serde_json::Value) -> crate::Result<()> {
        match &self.path {
            Some(path) => ImpCheckpoint {
                run: self.run.clone(),
                resume: r.clone(),
                seconds: self.earlier_seconds + self.start.elapsed().as_secs_f64(),
                extra,
            }
            .save(path),
            None => Ok(()),
        }
    }
}
