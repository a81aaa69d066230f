//! Shader modules, pipelines, the one bind group, and command recording: a trait call records
//! its dispatches (each with its own dynamic `Op` block) and submits them at once.

use super::buffers::{Buffers, OPS_PER_SUBMIT};
use super::context::GpuContext;
use super::interface::{self, Access, Cfg, Op, Resource, SharedStruct, BINDINGS};
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

/// Runtime checks naga adds to the kernels. Default: bounds checks on, loop bounding off
/// (a 64-bit counter in every loop iteration; the H100 measurements are in benches/NOTES.md).
/// `SPINR_SHADER_CHECKS=all` restores wgpu's default, `none` drops the bounds checks too.
fn shader_checks() -> wgpu::ShaderRuntimeChecks {
    let mut c = wgpu::ShaderRuntimeChecks::checked();
    match std::env::var("SPINR_SHADER_CHECKS").as_deref() {
        Ok("all") => {}
        Ok("none") => c = wgpu::ShaderRuntimeChecks::unchecked(),
        _ => c.force_loop_bounding = false,
    }
    c
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
}

const ENTRIES: &[(K, &str, &str)] = &[
    (K::Runs, "support", "runs"),
    (K::Apply, "support", "apply"),
    (K::ApplyFin, "support", "apply_fin"),
    (K::Grad, "support", "grad"),
    (K::Axpy, "support", "axpy"),
    (K::CopySlot, "support", "copy_slot"),
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
];

pub(crate) struct Kernels {
    pipelines: Vec<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    max_wg: u32,
    /// Per-kernel (dispatches, seconds) when profiling: every dispatch is then submitted and
    /// waited for on its own (slow; wall clock, so it includes the submission overhead).
    pub profile: Option<std::sync::Mutex<Vec<(u64, f64)>>>,
    /// GPU timestamps around every dispatch, while enabled (`GpuBackend::set_timing`).
    pub timer: Option<Timer>,
}

/// Timestamp queries around every dispatch: each dispatch gets its own compute pass whose
/// begin and end are written to a query set, resolved and read back after each submission.
/// Per-dispatch passes add a little overhead, so benchmarks take wall-clock and GPU timings
/// in separate runs.
pub(crate) struct Timer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    acc: std::sync::Mutex<TimerAcc>,
}

#[derive(Default)]
struct TimerAcc {
    /// Per entry point: (dispatches, GPU seconds).
    per_kernel: Vec<(u64, f64)>,
    busy: f64,
    dispatch_gaps: f64,
    submission_gaps: f64,
    submissions: u64,
    /// End of the last timed dispatch (ticks), to measure the idle time before the next
    /// submission starts.
    last_end: Option<u64>,
}

impl TimerAcc {
    fn new() -> Self {
        TimerAcc {
            per_kernel: vec![(0, 0.0); ENTRIES.len()],
            ..Default::default()
        }
    }
}

impl Timer {
    pub fn available(ctx: &GpuContext) -> bool {
        ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// `None` where the device has no timestamp queries.
    pub fn new(ctx: &GpuContext) -> Option<Timer> {
        if !Self::available(ctx) {
            return None;
        }
        let count = 2 * OPS_PER_SUBMIT as u32;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("spinr timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("spinr timestamps resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("spinr timestamps readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Timer {
            queries,
            resolve,
            readback,
            period_ns: ctx.queue.get_timestamp_period() as f64,
            acc: std::sync::Mutex::new(TimerAcc::new()),
        })
    }

    /// Reads the timestamps of the last submission (`jobs` in order) and accumulates them.
    fn collect(&self, ctx: &GpuContext, jobs: &[(K, Op, [u32; 3])]) -> Result<()> {
        let bytes = map_read(ctx, &self.readback, jobs.len() as u64 * 16)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let sec = |t: u64| t as f64 * self.period_ns * 1e-9;
        let mut acc = self
            .acc
            .lock()
            .map_err(|_| Error::Gpu("timer poisoned".into()))?;
        acc.submissions += 1;
        let mut prev_end = acc.last_end;
        for (i, (k, _, _)) in jobs.iter().enumerate() {
            let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
            let dt = sec(t1.saturating_sub(t0));
            acc.per_kernel[*k as usize].0 += 1;
            acc.per_kernel[*k as usize].1 += dt;
            acc.busy += dt;
            if let Some(e) = prev_end {
                let gap = sec(t0.saturating_sub(e));
                if i == 0 {
                    acc.submission_gaps += gap;
                } else {
                    acc.dispatch_gaps += gap;
                }
            }
            prev_end = Some(t1);
        }
        acc.last_end = prev_end;
        Ok(())
    }

    /// What was measured since the last call, and a fresh start.
    pub fn take(&self) -> crate::backend::GpuTimes {
        let mut acc = match self.acc.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        let kernels = acc
            .per_kernel
            .iter()
            .enumerate()
            .filter(|(_, &(n, _))| n > 0)
            .map(|(i, &(n, t))| crate::backend::KernelTime {
                name: kernel_name(i).to_string(),
                dispatches: n,
                seconds: t,
            })
            .collect();
        let out = crate::backend::GpuTimes {
            busy_seconds: acc.busy,
            dispatch_gap_seconds: acc.dispatch_gaps,
            submission_gap_seconds: acc.submission_gaps,
            submissions: acc.submissions,
            kernels,
        };
        *acc = TimerAcc::new();
        out
    }
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
    /// `subgroups`: compile the subgroup variant (the device must have enabled them).
    pub fn new(ctx: &GpuContext, bufs: &Buffers, subgroups: bool) -> Result<Kernels> {
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
                let checks = shader_checks();
                // SAFETY: the checks kept always include bounds checks unless the user asks
                // for none (SPINR_SHADER_CHECKS=none, a measurement aid). Dropping loop
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
        let profile = std::env::var_os("SPINR_GPU_PROFILE")
            .map(|_| std::sync::Mutex::new(vec![(0, 0.0); ENTRIES.len()]));
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
        let count = count.max(1);
        let max = self.max_wg as usize;
        if count <= max {
            [count as u32, 1, 1]
        } else {
            [max as u32, count.div_ceil(max) as u32, 1]
        }
    }
}

/// Kernel names, in `K` order (for profiles).
pub(crate) fn kernel_name(i: usize) -> &'static str {
    ENTRIES[i].2
}

/// The dispatches of one trait call, in order.
#[derive(Default)]
pub(crate) struct Rec {
    jobs: Vec<(K, Op, [u32; 3])>,
}

impl Rec {
    pub fn push(&mut self, k: K, op: Op, grid: [u32; 3]) {
        self.jobs.push((k, op, grid));
    }
}

/// A readback request: `bytes` from `buffer` at byte `offset`.
pub(crate) struct Read<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub bytes: u64,
}

/// Submits the recorded dispatches (split into several submissions only when a call has more
/// than `OPS_PER_SUBMIT` of them), then copies `reads` into the staging buffer and maps it.
pub(crate) fn submit(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    rec: Rec,
    reads: &[Read<'_>],
) -> Result<Vec<u8>> {
    let stride = bufs.op_stride as usize;
    if let Some(prof) = &kernels.profile {
        // One submission per dispatch, timed to completion.
        for (k, op, grid) in rec.jobs {
            let mut one = Rec::default();
            one.push(k, op, grid);
            ctx.wait()?;
            let t = std::time::Instant::now();
            submit_chunks(ctx, kernels, bufs, &one.jobs, &[], stride)?;
            ctx.wait()?;
            let mut p = prof
                .lock()
                .map_err(|_| Error::Gpu("profile poisoned".into()))?;
            p[k as usize].0 += 1;
            p[k as usize].1 += t.elapsed().as_secs_f64();
        }
        return finish(ctx, kernels, bufs, &Rec::default().jobs, reads, stride);
    }
    finish(ctx, kernels, bufs, &rec.jobs, reads, stride)
}

fn finish(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    jobs: &[(K, Op, [u32; 3])],
    reads: &[Read<'_>],
    stride: usize,
) -> Result<Vec<u8>> {
    let total = submit_chunks(ctx, kernels, bufs, jobs, reads, stride)?;
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    map_read(ctx, &bufs.staging, total)
}

/// Waits for the submitted work, then maps the first `bytes` of the `MAP_READ` buffer and
/// copies them out.
fn map_read(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let slice = buffer.slice(0..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback was never completed".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?;
        view.to_vec()
    };
    buffer.unmap();
    Ok(out)
}

/// Encodes and submits `jobs` (in chunks of `OPS_PER_SUBMIT`), then the copies of `reads`
/// into the staging buffer; returns the bytes staged.
fn submit_chunks(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    jobs: &[(K, Op, [u32; 3])],
    reads: &[Read<'_>],
    stride: usize,
) -> Result<u64> {
    let chunks: Vec<&[(K, Op, [u32; 3])]> = if jobs.is_empty() {
        vec![&[]]
    } else {
        jobs.chunks(OPS_PER_SUBMIT).collect()
    };
    let last = chunks.len() - 1;
    let mut total = 0u64;
    for (ci, chunk) in chunks.into_iter().enumerate() {
        let mut blob = vec![0u8; chunk.len() * stride];
        for (i, (_, op, _)) in chunk.iter().enumerate() {
            blob[i * stride..i * stride + std::mem::size_of::<Op>()]
                .copy_from_slice(bytemuck::bytes_of(op));
        }
        if !blob.is_empty() {
            ctx.queue.write_buffer(&bufs.ops, 0, &blob);
        }
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("spinr"),
            });
        if let (Some(timer), false) = (&kernels.timer, chunk.is_empty()) {
            // One pass per dispatch, its begin and end timestamped.
            for (i, (k, _, grid)) in chunk.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("spinr timed"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &timer.queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                pass.set_pipeline(&kernels.pipelines[*k as usize]);
                pass.set_bind_group(0, &kernels.bind_group, &[(i * stride) as u32]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
            let q = 2 * chunk.len() as u32;
            enc.resolve_query_set(&timer.queries, 0..q, &timer.resolve, 0);
            enc.copy_buffer_to_buffer(&timer.resolve, 0, &timer.readback, 0, q as u64 * 8);
        } else if !chunk.is_empty() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("spinr"),
                timestamp_writes: None,
            });
            for (i, (k, _, grid)) in chunk.iter().enumerate() {
                pass.set_pipeline(&kernels.pipelines[*k as usize]);
                pass.set_bind_group(0, &kernels.bind_group, &[(i * stride) as u32]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
        if ci == last {
            for r in reads {
                enc.copy_buffer_to_buffer(r.buffer, r.offset, &bufs.staging, total, r.bytes);
                total += r.bytes;
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.take_error()?;
        if let (Some(timer), false) = (&kernels.timer, chunk.is_empty()) {
            timer.collect(ctx, chunk)?;
        }
    }
    Ok(total)
}
