//! Sizing against the device's limits, the kernels' parameter block and bindings (the
//! pipelines are built by `crate::backend::gpu::jobs`).

use super::super::mlp::MlpShape;
use crate::backend::gpu::jobs::Kernel;
use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// The kernels (self-contained: no common prelude).
pub const MLP_WGSL: &str = include_str!("../../../shaders/mlp.wgsl");

/// Output tile of the products (shaders/mlp.wgsl `T`).
pub(super) const TILE: usize = 64;
pub(super) const F_GATHER: u32 = 1;
pub(super) const F_RESIDENT: u32 = 2;
pub(super) const F_ACC: u32 = 4;
/// Bytes of per-block buffers (`H`, streamed `X` rows) a block aims for.
pub(super) const BLOCK_BYTES: u64 = 256 << 20;
/// Dispatches per submission (parameter blocks in the uniform buffer).
pub(super) const JOBS_PER_SUBMIT: usize = 256;
/// `SCAL` slots: the loss of the last forward-backward, of the last `loss`.
pub(super) const SLOT_TRAIN: u32 = 0;
pub(super) const SLOT_EVAL: u32 = 1;

/// shaders/mlp.wgsl `P`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(super) struct Params {
    pub rows: u32,
    pub a0: u32,
    pub flags: u32,
    pub mode: u32,
    pub d: u32,
    pub m: u32,
    pub c: u32,
    pub nw: u32,
    pub v_off: u32,
    pub loss_off: u32,
    pub count: u32,
    pub slot: u32,
    pub inv_norm: f32,
    pub step: f32,
    pub bc2s: f32,
    pub beta2: f32,
    pub omb1: f32,
    pub omb2: f32,
    pub eps: f32,
    pub pad1: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum K {
    MmH,
    Head,
    GradV,
    GradH,
    MmGu,
    Adam,
    Reduce,
}

// Bindings (shaders/mlp.wgsl): 1 X, 2 IDX, 3 Y, 4 W, 5 G, 6 M1, 7 M2, 8 MASK, 9 H, 10 RL,
// 11 SCAL; 0 is the parameter block.
pub(super) const B_X: usize = 1;
pub(super) const B_IDX: usize = 2;
pub(super) const B_Y: usize = 3;
pub(super) const B_W: u32 = 4;
pub(super) const B_G: u32 = 5;
pub(super) const B_M1: usize = 6;
pub(super) const B_M2: usize = 7;
pub(super) const B_MASK: usize = 8;
pub(super) const B_H: u32 = 9;
pub(super) const B_RL: u32 = 10;
pub(super) const B_SCAL: u32 = 11;
pub(super) const READ_ONLY: [u32; 4] = [1, 2, 3, 8];

/// Entry points with the storage bindings each uses, in [`K`] order.
pub(super) const KERNELS: [Kernel; 7] = [
    Kernel {
        entry: "mm_h",
        bindings: &[1, 2, 4, 9],
    },
    Kernel {
        entry: "head",
        bindings: &[2, 3, 4, 9, 10],
    },
    Kernel {
        entry: "grad_v",
        bindings: &[5, 9, 10],
    },
    Kernel {
        entry: "grad_h",
        bindings: &[4, 9, 10],
    },
    Kernel {
        entry: "mm_gu",
        bindings: &[1, 2, 5, 9],
    },
    Kernel {
        entry: "adam",
        bindings: &[4, 5, 6, 7, 8],
    },
    Kernel {
        entry: "reduce",
        bindings: &[10, 11],
    },
];

/// Where the features live and how many samples a block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub resident: bool,
    pub block: usize,
}

/// Checks a network against the device's limits and sizes its buffers: the weights, one
/// block's `H` (and streamed `X` rows) and the per-sample losses must each fit one storage
/// binding; the features stay on the device when they fit one binding and `feature_budget`.
pub fn plan(shape: &MlpShape, lim: &wgpu::Limits, feature_budget: usize) -> Result<Plan> {
    let MlpShape { n, d, m, c } = *shape;
    // The kernels index elements with u32: no binding beyond 2³² floats.
    let bind_max = lim
        .max_storage_buffer_binding_size
        .min(lim.max_buffer_size)
        .min(4 * u32::MAX as u64);
    let fix = "use fewer neurons or features, or the CPU (ImpDevice::Cpu)";
    let nw = shape.weights() as u64;
    if 4 * nw > bind_max || nw > u32::MAX as u64 {
        return Err(limit(
            "the dense weights U and V (m·d + m·C floats; limits.max_storage_buffer_binding_size)",
            4 * nw,
            bind_max,
            fix,
        ));
    }
    let x_bytes = 4 * n as u64 * d as u64;
    let resident = x_bytes <= bind_max.min(feature_budget as u64);
    let row_bytes = 4 * (m + c) as u64 + if resident { 0 } else { 4 * d as u64 };
    let mut block = (BLOCK_BYTES / row_bytes)
        .min(bind_max / (4 * m as u64))
        .min(65535 * TILE as u64);
    if !resident {
        block = block.min(bind_max / (4 * d as u64));
    }
    let block = (block as usize).min(n);
    if block == 0 {
        return Err(limit(
            "one sample's features or hidden layer (limits.max_storage_buffer_binding_size)",
            4 * d.max(m) as u64,
            bind_max,
            fix,
        ));
    }
    let rl = 4 * (block * c + n) as u64;
    if rl > bind_max {
        return Err(limit(
            "the per-sample losses (limits.max_storage_buffer_binding_size)",
            rl,
            bind_max,
            "use fewer samples, or the CPU (ImpDevice::Cpu)",
        ));
    }
    Ok(Plan { resident, block })
}

fn limit(what: &'static str, needed: u64, limit: u64, fix: &'static str) -> Error {
    Error::DeviceLimit {
        what,
        needed,
        limit,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_respect_the_binding_limit() {
        let mut lim = wgpu::Limits::downlevel_defaults();
        lim.max_storage_buffer_binding_size = 1 << 20;
        lim.max_buffer_size = 1 << 30;
        let s = |n, d, m| MlpShape { n, d, m, c: 1 };
        // 1000×100 features (400 KB) stay on the device; 10000×100 (4 MB) are streamed.
        assert!(plan(&s(1000, 100, 10), &lim, usize::MAX).unwrap().resident);
        let p = plan(&s(10000, 100, 10), &lim, usize::MAX).unwrap();
        assert!(!p.resident && p.block * 100 * 4 <= 1 << 20);
        assert!(!plan(&s(1000, 100, 10), &lim, 1000).unwrap().resident);
        // 300·1000 weights (1.2 MB) exceed the binding: an error that names the limit.
        let e = plan(&s(10, 1000, 300), &lim, usize::MAX).unwrap_err();
        assert!(
            matches!(e, Error::DeviceLimit { .. })
                && e.to_string().contains("max_storage_buffer_binding_size"),
            "{e}"
        );
        assert!(plan(&s(300_000, 2, 1), &lim, usize::MAX).is_err());
    }
}
