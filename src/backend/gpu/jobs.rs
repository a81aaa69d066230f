//! A small dispatcher for self-contained shader modules with one entry point per job: one
//! pipeline and bind group per entry point (each layout holding only the storage bindings it
//! uses), a uniform parameter block per job at a dynamic offset, submission in chunks, one
//! readback through a staging buffer, and NaN poisoning of each job's outputs for tests.
//! IMP's dense network (`crate::imp::gpu`) and the vector-output backend
//! (`crate::backend::vector::gpu`) run on it.

use super::GpuContext;
use crate::error::{Error, Result};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::sync::Arc;

/// One entry point and the storage bindings it uses (binding 0 is the parameter block).
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub entry: &'static str,
    pub bindings: &'static [u32],
}

/// A self-contained WGSL module: its source, its entry points, and the bindings it
/// declares `read`.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub label: &'static str,
    pub source: &'a str,
    pub kernels: &'a [Kernel],
    pub read_only: &'a [u32],
}

/// One dispatch: its kernel (index into the module's list), parameters, grid, and the byte
/// ranges `(binding, offset, bytes)` it writes, filled with NaN first when poisoning.
pub struct Job<P> {
    pub k: usize,
    pub p: P,
    pub grid: [u32; 3],
    pub outputs: Vec<(u32, u64, u64)>,
}

/// The pipelines of one module on its buffers (`bufs[b]` is binding `b`; `bufs[0]` the
/// uniform parameter block).
pub struct JobQueue<P> {
    ctx: Arc<GpuContext>,
    pub bufs: Vec<wgpu::Buffer>,
    staging: wgpu::Buffer,
    pipes: Vec<(wgpu::ComputePipeline, wgpu::BindGroup)>,
    stride: u64,
    per_submit: usize,
    max_wg: u32,
    nan: Option<wgpu::Buffer>,
    label: &'static str,
    _p: PhantomData<P>,
}

impl<P: Pod> JobQueue<P> {
    /// Bytes of the parameter block for `per_submit` jobs on this device.
    pub fn params_bytes(ctx: &GpuContext, per_submit: usize) -> u64 {
        per_submit as u64 * Self::stride_for(ctx)
    }

    fn stride_for(ctx: &GpuContext) -> u64 {
        let align = ctx.limits().min_uniform_buffer_offset_alignment.max(1) as u64;
        (std::mem::size_of::<P>() as u64).div_ceil(align) * align
    }

    /// Compiles the module and builds one pipeline per kernel. `bufs[0]` must hold
    /// [`JobQueue::params_bytes`]`(ctx, per_submit)`; `staging_bytes` is the largest readback.
    pub fn new(
        ctx: Arc<GpuContext>,
        module: Module<'_>,
        bufs: Vec<wgpu::Buffer>,
        staging_bytes: u64,
        per_submit: usize,
    ) -> Result<Self> {
        let Module {
            label,
            source,
            kernels,
            read_only,
        } = module;
        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let params_size = wgpu::BufferSize::new(std::mem::size_of::<P>() as u64);
        let params = wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: params_size,
            },
            count: None,
        };
        let mut pipes = Vec::with_capacity(kernels.len());
        for k in kernels {
            let mut entries = vec![params];
            entries.extend(k.bindings.iter().map(|&b| wgpu::BindGroupLayoutEntry {
                binding: b,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: read_only.contains(&b),
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }));
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(k.entry),
                entries: &entries,
            });
            let mut group = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &bufs[0],
                    offset: 0,
                    size: params_size,
                }),
            }];
            group.extend(k.bindings.iter().map(|&b| wgpu::BindGroupEntry {
                binding: b,
                resource: bufs[b as usize].as_entire_binding(),
            }));
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(k.entry),
                layout: &layout,
                entries: &group,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(k.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(k.entry),
                // Every kernel writes its workgroup memory before reading it.
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache: None,
            });
            pipes.push((pipeline, bind_group));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "{label} shaders failed to compile: {e}"
            )));
        }
        ctx.take_error()?;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: staging_bytes.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            stride: Self::stride_for(&ctx),
            max_wg: ctx.limits().max_compute_workgroups_per_dimension,
            ctx,
            bufs,
            staging,
            pipes,
            per_submit,
            nan: None,
            label,
            _p: PhantomData,
        })
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Bytes of the staging buffer.
    pub fn staging_bytes(&self) -> u64 {
        self.staging.size()
    }

    /// A grid of `count` workgroups, folded into two dimensions past the per-dimension limit
    /// (kernels recover the index with `wid.x + wid.y · nwg.x`).
    pub fn grid1(&self, count: usize) -> [u32; 3] {
        super::kernels::grid1(count, self.max_wg)
    }

    /// Test aid: with `on`, every job's outputs are filled with NaN just before it runs, so an
    /// output a kernel fails to write shows up as NaN.
    pub fn set_poison(&mut self, on: bool) {
        if !on {
            self.nan = None;
            return;
        }
        let len = self
            .bufs
            .iter()
            .skip(1)
            .map(|b| b.size())
            .max()
            .unwrap_or(16);
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("NaN"),
            size: len,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let nan = vec![f32::NAN; (len / 4) as usize];
        self.ctx
            .queue
            .write_buffer(&buf, 0, bytemuck::cast_slice(&nan));
        self.nan = Some(buf);
    }

    /// Records and submits `jobs` (several submissions past `per_submit`), then copies `read`
    /// (binding, byte offset, bytes) to the staging buffer and returns it.
    pub fn submit(&self, jobs: &[Job<P>], read: Option<(u32, u64, u64)>) -> Result<Vec<u8>> {
        let ctx = &self.ctx;
        let chunks: Vec<&[Job<P>]> = if jobs.is_empty() {
            vec![&[]]
        } else {
            jobs.chunks(self.per_submit).collect()
        };
        let last = chunks.len() - 1;
        for (ci, chunk) in chunks.into_iter().enumerate() {
            let stride = self.stride as usize;
            let mut blob = vec![0u8; chunk.len() * stride];
            for (i, j) in chunk.iter().enumerate() {
                blob[i * stride..i * stride + std::mem::size_of::<P>()]
                    .copy_from_slice(bytemuck::bytes_of(&j.p));
            }
            if !blob.is_empty() {
                ctx.queue.write_buffer(&self.bufs[0], 0, &blob);
            }
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some(self.label),
                });
            for (i, j) in chunk.iter().enumerate() {
                if let Some(nan) = &self.nan {
                    for &(b, at, bytes) in &j.outputs {
                        if bytes > 0 {
                            enc.copy_buffer_to_buffer(nan, 0, &self.bufs[b as usize], at, bytes);
                        }
                    }
                }
                let (pipe, bg) = &self.pipes[j.k];
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(self.label),
                    timestamp_writes: None,
                });
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, bg, &[(i * stride) as u32]);
                pass.dispatch_workgroups(j.grid[0], j.grid[1], j.grid[2]);
            }
            if ci == last {
                if let Some((b, at, bytes)) = read {
                    enc.copy_buffer_to_buffer(&self.bufs[b as usize], at, &self.staging, 0, bytes);
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.take_error()?;
        }
        match read {
            Some((_, _, bytes)) => self.map_staging(bytes),
            None => Ok(Vec::new()),
        }
    }

    fn map_staging(&self, bytes: u64) -> Result<Vec<u8>> {
        let slice = self.staging.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback was never completed".into()))?
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?
            .to_vec();
        self.staging.unmap();
        Ok(out)
    }

    /// Reads `len` floats of binding `b` from float `at`.
    pub fn read_floats(&self, b: u32, at: usize, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.submit(&[], Some((b, 4 * at as u64, 4 * len as u64)))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
