//! The one error type of the library. Every variant says what is wrong and how to fix it.
//!
//! Library code names the *quantity* that is wrong ([`Param`]); only the command line knows
//! which flag sets that quantity for the command at hand (`--inputs` for `spinr plant`,
//! `--features` for `spinr fit`), so `crate::cli` turns [`Error::Invalid`] into
//! [`Error::InvalidArgument`] naming the flag.

use std::path::PathBuf;

/// A quantity a caller chooses. Library errors name one; the CLI maps it to its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// `n`, the number of samples.
    Samples,
    /// `d`, the input dimension (features per sample).
    Inputs,
    /// `m`, hidden neurons.
    Neurons,
    /// `s`, nonzero weights.
    Nonzeros,
    /// Outputs `C` per sample.
    Outputs,
    /// Samples per update.
    BatchSize,
    /// Epochs (or IMP epochs per round).
    Iters,
    /// Refinement steps per IHT step.
    Inner,
    /// Frequency standard deviations.
    Sigma,
    /// The gate rule.
    Gates,
    /// A size asked of a rendered image or benchmark.
    Size,
    /// Model weights handed to a backend or read from a file.
    Model,
    /// Which image of a multi-image file.
    Index,
    /// The learning rate.
    LearningRate,
    /// The training method.
    Method,
    /// Layers of a deep network.
    Layers,
    /// A backend register (a programming error, not user input).
    Slot,
    /// Seeds of a sweep.
    Seed,
    /// Which part of a sweep's grid one job runs.
    Shard,
    /// The output folder.
    Output,
    /// Which backend runs the work.
    Backend,
    /// How a colour image is fitted.
    Colour,
    /// The momentum of minibatch updates.
    Momentum,
    /// The candidates of an IHT step, as a multiple of `s`.
    Candidates,
    /// The share of `s` a growing support starts from.
    GrowFrom,
    /// Wall-clock seconds for a fit.
    TimeBudget,
    /// The share of `s` given to DCT terms.
    DctShare,
}

impl Param {
    /// What the quantity is, for messages that have no flag to name.
    pub fn describe(self) -> &'static str {
        match self {
            Param::Samples => "number of samples",
            Param::Inputs => "input dimension",
            Param::Neurons => "number of neurons",
            Param::Nonzeros => "number of nonzeros",
            Param::Outputs => "number of outputs",
            Param::BatchSize => "batch size",
            Param::Iters => "number of epochs",
            Param::Inner => "number of refinement steps",
            Param::Sigma => "frequency scale",
            Param::Gates => "gate rule",
            Param::Size => "size",
            Param::Model => "model",
            Param::Index => "image index",
            Param::LearningRate => "learning rate",
            Param::Method => "method",
            Param::Layers => "number of layers",
            Param::Slot => "backend slot",
            Param::Seed => "seed",
            Param::Shard => "shard",
            Param::Output => "output folder",
            Param::Backend => "backend",
            Param::Colour => "colour model",
            Param::Momentum => "momentum",
            Param::Candidates => "candidates",
            Param::GrowFrom => "support growth",
            Param::TimeBudget => "time budget",
            Param::DctShare => "DCT share",
        }
    }
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A library-level bad value: names the quantity, the CLI names the flag.
    #[error("invalid {param}: {msg}")]
    Invalid { param: Param, msg: String },

    /// A bad command-line value, naming the flag that fixes it.
    #[error("invalid argument {flag}: {msg}")]
    InvalidArgument { flag: &'static str, msg: String },

    #[error("non-finite value in {what} at index {index}: spinr needs finite inputs (check the data for NaN or infinity)")]
    NonFinite { what: &'static str, index: usize },

    #[error("cannot read image {path}: {msg}")]
    Image { path: PathBuf, msg: String },

    #[error("cannot read model {path}: {msg}")]
    Model { path: PathBuf, msg: String },

    #[error("cannot read data {path}: {msg}")]
    Data { path: PathBuf, msg: String },

    #[error("cannot resume from {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },

    /// The optimisation produced a non-finite loss (a runtime failure, not a bad flag).
    #[error("the fit diverged: {0}")]
    Diverged(String),

    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),

    #[error(
        "GPU limit exceeded: {what} needs {} but the device allows {}; {fix}",
        human_bytes(*needed),
        human_bytes(*limit)
    )]
    DeviceLimit {
        what: &'static str,
        needed: u64,
        limit: u64,
        fix: &'static str,
    },

    /// An operation would need more memory than it may use (checked before allocating).
    #[error(
        "not enough memory: {what} needs about {} but {limited_by} is {}; {fix}",
        human_bytes(*needed),
        human_bytes(*budget)
    )]
    Memory {
        what: String,
        needed: u64,
        budget: u64,
        limited_by: String,
        fix: String,
    },

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("interrupted")]
    Interrupted,

    /// A sweep runner broke its contract (rows of different shapes, a cell it was not asked
    /// for): a programming error in the runner, not the user's input.
    #[error("sweep runner: {0}")]
    Runner(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad command-line value (CLI code, which knows the flag).
    pub fn arg(flag: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            flag,
            msg: msg.into(),
        }
    }

    /// A bad value of a quantity (library code).
    pub fn invalid(param: Param, msg: impl Into<String>) -> Self {
        Error::Invalid {
            param,
            msg: msg.into(),
        }
    }

    /// Whether the error is the caller's input (exit code 2) rather than a runtime failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. }
                | Error::InvalidArgument { .. }
                | Error::NonFinite { .. }
                | Error::Image { .. }
                | Error::Model { .. }
                | Error::Data { .. }
                | Error::Checkpoint { .. }
                | Error::Memory { .. }
                | Error::DeviceLimit { .. }
        )
    }
}

/// Bytes for people: "1.5 GiB", "300 MiB", "12 KiB", "17 bytes".
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size {
            let v = b / size as f64;
            return if v >= 100.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// Checks that every value is finite, naming the first offender.
pub fn check_finite(what: &'static str, xs: &[f32]) -> Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::NonFinite { what, index }),
        None => Ok(()),
    }
}
