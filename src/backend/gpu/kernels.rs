//! Shader sources and their composition, the entry points, the pipelines and the one bind
//! group every dispatch uses.

use super::buffers::Buffers;
use super::context::GpuContext;
use super::interface::{self, Access, Cfg, Op, Resource, SharedStruct, BINDINGS};
use super::GpuOptions;
use crate::error::{Error, Result};

/// Code shared by every kernel file, prepended by [`compose_shader`] after the generated
/// interface ([`interface::wgsl_prelude`]).
pub const COMMON_WGSL: &str = include_str!("../../../shaders/common.wgsl");

/// The kernel files (without the common prelude), by file stem.
pub const SHADER_FILES: &[(&str, &str)] = &[
    ("support", include_str!("../../../shaders/support.wgsl")),
    ("gates", include_str!("../../../shaders/gates.wgsl")),
    ("dense", include_str!("../../../shaders/dense.wgsl")),
    ("topk", include_str!("../../../shaders/topk.wgsl")),
];

/// Gate-mask word assembly, portable (workgroup atomics) and with subgroup operations.
pub const BITS_ATOMIC_WGSL: &str = include_str!("../../../shaders/bits_atomic.wgsl");
pub const BITS_SUBGROUP_WGSL: &str = include_str!("../../../shaders/bits_subgroup.wgsl");

/// The source the device compiles for one kernel file: the interface generated from
/// `interface.rs`, `common.wgsl`, the mask-word helpers (with subgroup operations where
/// `subgroups`), the file.
pub fn compose_shader(file: &str, subgroups: bool) -> String {
    // naga 30 takes subgroup built-ins without an `enable` directive (it rejects the
    // directive); the device's SUBGROUP feature is what allows them.
    let bits = if subgroups {
        BITS_SUBGROUP_WGSL
    } else {
        BITS_ATOMIC_WGSL
    };
    let prelude = interface::wgsl_prelude();
    format!("{prelude}\n{COMMON_WGSL}\n{bits}\n// ---- kernel file ----\n{file}")
}

/// Every entry point, with its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum K {
    Runs,
    Apply,
    ApplyFin,
    Grad,
    Axpy,
    CopySlot,
    Extrapolate,
    StepMu,
    Reduce,
    RefineMu,
    RefineDecide,
    GatesPrep,
    GenH,
    Mask,
    TileMask,
    DenseMm,
    ReduceTile,
    AddW,
    Hist,
    Select,
    Count,
    Scan,
    Scatter,
    FeatCount,
    FeatScan,
    FeatPlace,
    FeatSort,
    ApplyF,
    GradF,
}

const ENTRIES: &[(K, &str, &str)] = &[
    (K::Runs, "support", "runs"),
    (K::Apply, "support", "apply"),
    (K::ApplyFin, "support", "apply_fin"),
    (K::Grad, "support", "grad"),
    (K::Axpy, "support", "axpy"),
    (K::CopySlot, "support", "copy_slot"),
    (K::Extrapolate, "support", "extrapolate"),
    (K::StepMu, "support", "step_mu"),
    (K::Reduce, "support", "reduce"),
    (K::RefineMu, "support", "refine_mu"),
    (K::RefineDecide, "support", "refine_decide"),
    (K::GatesPrep, "support", "gates_prep"),
    (K::GenH, "gates", "gen_h"),
    (K::Mask, "gates", "mask"),
    (K::TileMask, "gates", "tile_mask"),
    (K::DenseMm, "dense", "dense_mm"),
    (K::ReduceTile, "topk", "reduce_tile"),
    (K::AddW, "topk", "add_w"),
    (K::Hist, "topk", "hist"),
    (K::Select, "topk", "select_digit"),
    (K::Count, "topk", "count"),
    (K::Scan, "topk", "scan"),
    (K::Scatter, "topk", "scatter"),
    (K::FeatCount, "support", "feat_count"),
    (K::FeatScan, "support", "feat_scan"),
    (K::FeatPlace, "support", "feat_place"),
    (K::FeatSort, "support", "feat_sort"),
    (K::ApplyF, "support", "apply_f"),
    (K::GradF, "support", "grad_f"),
];

pub(crate) struct Kernels {
    pub(crate) pipelines: Vec<wgpu::ComputePipeline>,
    pub(crate) bind_group: wgpu::BindGroup,
    max_wg: u32,
    /// Per-kernel (dispatches, seconds) when profiling: every dispatch is then submitted and
    /// waited for on its own (slow; wall clock, so it includes the submission overhead).
    pub profile: Option<std::sync::Mutex<Vec<(u64, f64)>>>,
    /// GPU timestamps around every dispatch, while enabled (`GpuBackend::set_timing`).
    pub timer: Option<super::timer::Timer>,
}

/// The layout entry of one binding of [`BINDINGS`].
fn layout_entry(b: &interface::Binding) -> wgpu::BindGroupLayoutEntry {
    let size = match b.resource {
        Resource::Cfg => wgpu::BufferSize::new(Cfg::SIZE as u64),
        Resource::Op => wgpu::BufferSize::new(Op::SIZE as u64),
        _ => None,
    };
    let (ty, has_dynamic_offset) = match b.access {
        Access::Uniform => (wgpu::BufferBindingType::Uniform, false),
        Access::UniformDynamic => (wgpu::BufferBindingType::Uniform, true),
        Access::Read => (wgpu::BufferBindingType::Storage { read_only: true }, false),
        Access::ReadWrite => (wgpu::BufferBindingType::Storage { read_only: false }, false),
    };
    wgpu::BindGroupLayoutEntry {
        binding: b.index,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset,
            min_binding_size: size,
        },
        count: None,
    }
}

impl Kernels {
    /// The subgroup variant where `opts.subgroups` and the device has them enabled.
    pub fn new(ctx: &GpuContext, bufs: &Buffers, opts: &GpuOptions) -> Result<Kernels> {
        let subgroups = opts.subgroups && ctx.subgroups();
        let device = &ctx.device;
        let layout_entries: Vec<_> = BINDINGS.iter().map(layout_entry).collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("spinr"),
            entries: &layout_entries,
        });
        let entries: Vec<wgpu::BindGroupEntry<'_>> = BINDINGS
            .iter()
            .map(|b| wgpu::BindGroupEntry {
                binding: b.index,
                resource: match b.resource {
                    Resource::Cfg => bufs.cfg.as_entire_binding(),
                    // One Op block, moved by the dynamic offset of each dispatch.
                    Resource::Op => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &bufs.ops,
                        offset: 0,
                        size: wgpu::BufferSize::new(Op::SIZE as u64),
                    }),
                    Resource::X(i) => bufs.x[i].as_entire_binding(),
                    Resource::F => bufs.f.as_entire_binding(),
                    Resource::U => bufs.u.as_entire_binding(),
                    Resource::H => bufs.h.as_entire_binding(),
                },
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("spinr"),
            layout: &layout,
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("spinr"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let modules: Vec<(&str, wgpu::ShaderModule)> = SHADER_FILES
            .iter()
            .map(|&(name, src)| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(compose_shader(src, subgroups).into()),
                };
                let checks = opts.shader_checks.wgpu();
                // SAFETY: the checks kept always include bounds checks unless the caller asks
                // for none (ShaderChecks::None, a measurement aid). Dropping loop
                // bounding only removes a guard against infinite loops, and every loop in
                // shaders/*.wgsl is counted (its bound is a loop-invariant size).
                let module = unsafe { device.create_shader_module_trusted(desc, checks) };
                (name, module)
            })
            .collect();
        let mut pipelines = Vec::with_capacity(ENTRIES.len());
        for (i, &(k, file, entry)) in ENTRIES.iter().enumerate() {
            debug_assert_eq!(k as usize, i);
            let module = &modules
                .iter()
                .find(|(n, _)| *n == file)
                .expect("kernel file listed")
                .1;
            pipelines.push(
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pipeline_layout),
                    module,
                    entry_point: Some(entry),
                    // Every kernel writes its workgroup memory before reading it; the default
                    // zeroing would add a pass over it to each of millions of workgroups.
                    compilation_options: wgpu::PipelineCompilationOptions {
                        zero_initialize_workgroup_memory: false,
                        ..Default::default()
                    },
                    cache: None,
                }),
            );
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("shader compilation failed: {e}")));
        }
        ctx.take_error()?;
        // One entry per kernel, then READBACKS.
        let profile = opts
            .profile_dispatches
            .then(|| std::sync::Mutex::new(vec![(0, 0.0); READBACKS + 1]));
        Ok(Kernels {
            pipelines,
            bind_group,
            max_wg: ctx.limits.max_compute_workgroups_per_dimension,
            profile,
            timer: None,
        })
    }

    /// A 1-D job of `count` workgroups as a grid within the per-dimension limit (kernels
    /// linearise `x + y·nx` and bound-check).
    pub fn grid1(&self, count: usize) -> [u32; 3] {
        grid1(count, self.max_wg)
    }
}

/// `count` workgroups (at least one) as a grid of at most `max_per_dim` per dimension, folded
/// into two dimensions past it; kernels recover the index as `wid.x + wid.y · nwg.x`.
pub(crate) fn grid1(count: usize, max_per_dim: u32) -> [u32; 3] {
    let count = count.max(1);
    let max = max_per_dim as usize;
    if count <= max {
        [count as u32, 1, 1]
    } else {
        [max as u32, count.div_ceil(max) as u32, 1]
    }
}

/// The profile's entry after the kernels': host round trips (a submission waited for and
/// read back), with the wall time of the wait and the copy.
pub(crate) const READBACKS: usize = ENTRIES.len();

/// Kernel names, in `K` order, then `READBACKS`'s (for profiles).
pub(crate) fn kernel_name(i: usize) -> &'static str {
    ENTRIES.get(i).map_or("(readbacks)", |e| e.2)
}

/// Every entry point's name, by kernel index.
pub(crate) fn kernel_names() -> Vec<&'static str> {
    ENTRIES.iter().map(|e| e.2).collect()
}
