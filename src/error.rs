//! The one error type of the library. Every variant says what is wrong and how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument {flag}: {msg}")]
    InvalidArgument { flag: &'static str, msg: String },

    #[error("non-finite value in {what} at index {index}: spinr needs finite inputs (check the data for NaN or infinity)")]
    NonFinite { what: &'static str, index: usize },

    #[error("cannot read image {path}: {msg}")]
    Image { path: PathBuf, msg: String },

    #[error("cannot read model {path}: {msg}")]
    Model { path: PathBuf, msg: String },

    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },

    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),

    #[error(
        "GPU limit exceeded: {what} needs {needed} bytes but the device allows {limit}; {fix}"
    )]
    DeviceLimit {
        what: &'static str,
        needed: u64,
        limit: u64,
        fix: &'static str,
    },

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn arg(flag: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            flag,
            msg: msg.into(),
        }
    }
}

/// Checks that every value is finite, naming the first offender.
pub fn check_finite(what: &'static str, xs: &[f32]) -> Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::NonFinite { what, index }),
        None => Ok(()),
    }
}
