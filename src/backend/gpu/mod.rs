//! The wgpu backend (work in progress).

use crate::error::{Error, Result};

/// Placeholder until the WGSL backend lands.
pub fn unavailable() -> Error {
    Error::NoAdapter("the GPU backend is not built yet".into())
}

pub fn check() -> Result<()> {
    Err(unavailable())
}
