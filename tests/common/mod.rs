//! Shared by the GPU test binaries (`mod common;`).

use spinr::backend::gpu::GpuContext;
use std::sync::{Arc, OnceLock};

/// The device every test of this binary shares. Fails (never skips) without an adapter and
/// says how to get one.
pub fn gpu_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new(None, false).unwrap_or_else(|e| {
            panic!(
                "the GPU tests need a GPU adapter and found none ({e}). Install one: \
                 `apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter"
            )
        })
    })
    .clone()
}
