//! The dense network on the GPU: `shaders/mlp.wgsl`, one entry point per job, on buffers
//! allocated once per network.
//!
//! Per block of samples: `mm_h` (`H = relu(X Uᵀ)`, a 64×64-tiled product), `head` (outputs,
//! per-sample loss and `dL/dO`), `grad_v` (`∇V = Hᵀ R`, a workgroup tree per weight),
//! `grad_h` (`G = (R Vᵀ) ∘ 1[H > 0]` in place of `H`), `mm_gu` (`∇U = Gᵀ X`, tiled); later
//! blocks add to the gradient. Then `reduce` sums the per-sample losses in one workgroup
//! (fixed order, no float atomics) and `adam` updates every weight.
//!
//! The features live on the device when they fit the caller's byte budget and a storage
//! binding (`X` resident, minibatches gathered by index in the kernels); otherwise each
//! block's rows are generated or gathered on the host and uploaded before its kernels.
//! Each kernel binds only the buffers it uses (at most five storage buffers) through its own
//! layout, and its parameters through a dynamic offset into one uniform buffer.

mod setup;

pub use setup::{plan, Plan, MLP_WGSL};

use super::adam::AdamStep;
use super::mlp::{check_batch, DenseMlp, MlpData, MlpShape, Targets};
use crate::backend::gpu::jobs::{JobQueue, Module};
use crate::backend::gpu::GpuContext;
use crate::backend::{BackendInfo, MemoryMeter, MemoryStats};
use crate::error::{Error, Param, Result};
use crate::samples::{self, SampleBlocks, SampleSource};
use rayon::prelude::*;
use setup::*;
use std::sync::Arc;

/// Receives each block's outputs (bytes of `rows × C` floats).
type BlockSink<'s> = dyn FnMut(&[u8]) + 's;

type Job = crate::backend::gpu::jobs::Job<Params>;

pub struct GpuMlp<'a> {
    ctx: Arc<GpuContext>,
    data: MlpData<'a>,
    shape: MlpShape,
    /// Every sample's features are on the device.
    resident: bool,
    /// Samples per block.
    block: usize,
    /// The pipelines on their buffers (index 0: the parameter block).
    q: JobQueue<Params>,
    xhost: Vec<f32>,
    trained: bool,
    meter: MemoryMeter,
}

impl<'a> GpuMlp<'a> {
    /// A network of `m` neurons and `c` outputs on `data`; the features stay on the device
    /// when they take at most `feature_budget` bytes (and fit one storage binding).
    pub fn new(
        ctx: Arc<GpuContext>,
        data: MlpData<'a>,
        m: usize,
        c: usize,
        feature_budget: usize,
    ) -> Result<Self> {
        data.check(m, c)?;
        let (n, d) = (data.n, data.d);
        let shape = MlpShape { n, d, m, c };
        let lim = ctx.limits();
        let Plan { resident, block } = plan(&shape, lim, feature_budget)?;
        let nw = shape.weights() as u64;
        let rl_len = (block * c + n) as u64;
        let mut meter = MemoryMeter::default();
        use wgpu::BufferUsages as U;
        let storage = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let mut make = |label: &str, floats: u64, usage: wgpu::BufferUsages| {
            crate::backend::gpu::create_buffer(&ctx, &mut meter, label, 4 * floats, usage)
        };
        let y_len = match data.targets {
            Targets::Values(y) => y.len(),
            _ => n,
        } as u64;
        let bufs = vec![
            make(
                "imp params",
                JobQueue::<Params>::params_bytes(&ctx, JOBS_PER_SUBMIT) / 4,
                U::UNIFORM | U::COPY_DST,
            ),
            make(
                "imp X",
                if resident { n * d } else { block * d } as u64,
                storage,
            ),
            make("imp idx", n as u64, storage),
            make("imp y", y_len, storage),
            make("imp W", nw, storage),
            make("imp G", nw, storage),
            make("imp M1", nw, storage),
            make("imp M2", nw, storage),
            make("imp mask", nw, storage),
            make("imp H", (block * m) as u64, storage),
            make("imp RL", rl_len, storage),
            make("imp scalars", 4, storage),
        ];
        let staging = 4 * nw.max((block * c) as u64);
        meter.alloc(staging);
        let q = JobQueue::new(
            ctx.clone(),
            Module {
                label: "imp",
                source: MLP_WGSL,
                kernels: &KERNELS,
                read_only: &READ_ONLY,
            },
            bufs,
            staging,
            JOBS_PER_SUBMIT,
        )?;
        let mut mlp = GpuMlp {
            ctx,
            data,
            shape,
            resident,
            block,
            q,
            xhost: Vec::new(),
            trained: false,
            meter,
        };
        mlp.upload_static()?;
        Ok(mlp)
    }

    /// Targets, the mask (all alive), and the resident features.
    fn upload_static(&mut self) -> Result<()> {
        let q = &self.ctx.queue;
        // Targets and features are moved a block of samples at a time: no n×d copy on the host.
        let blocks = SampleBlocks::within(self.data.n, self.data.d, samples::BLOCK_BYTES, 1);
        let data = &self.data;
        let t = data.targets_per_sample();
        if t > 0 {
            samples::for_each_targets(data, blocks, |range, y| {
                let at = (4 * range.start * t) as u64;
                q.write_buffer(&self.q.bufs[B_Y], at, bytemuck::cast_slice(y));
                Ok(())
            })?;
        }
        let ones = vec![1f32; self.shape.weights()];
        q.write_buffer(&self.q.bufs[B_MASK], 0, bytemuck::cast_slice(&ones));
        if self.resident {
            let d = data.d;
            samples::for_each_rows(data, blocks, |range, rows| {
                q.write_buffer(
                    &self.q.bufs[B_X],
                    (4 * range.start * d) as u64,
                    bytemuck::cast_slice(rows),
                );
                // Each write is staged until the next submission: flush so that the staging
                // memory does not grow to the whole matrix.
                q.submit([]);
                Ok(())
            })?;
        }
        q.submit([]);
        self.ctx.take_error()
    }

    /// Test aid: with `on`, every kernel's outputs are filled with NaN just before it runs, so
    /// an output a kernel fails to write shows up as NaN.
    pub fn set_poison(&mut self, on: bool) {
        self.q.set_poison(on);
    }

    /// Whether every sample's features are on the device.
    pub fn resident(&self) -> bool {
        self.resident
    }

    /// Samples per block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Test aid: smaller blocks (at most the allocated one), to run the multi-block path.
    pub fn set_block(&mut self, rows: usize) {
        self.block = rows.clamp(1, self.block);
    }

    fn grid1(&self, count: usize) -> [u32; 3] {
        self.q.grid1(count)
    }

    fn base(&self) -> Params {
        let MlpShape { d, m, c, .. } = self.shape;
        Params {
            d: d as u32,
            m: m as u32,
            c: c as u32,
            nw: self.shape.weights() as u32,
            v_off: (m * d) as u32,
            loss_off: (self.block * c) as u32,
            mode: match self.data.targets {
                Targets::Values(_) => 1,
                Targets::Labels(_) => 2,
                Targets::None => 0,
            },
            ..Default::default()
        }
    }

    /// The forward jobs of one block (`mm_h`, `head`), and with `train` the backward ones.
    fn block_jobs(&self, p: Params, train: bool) -> Vec<Job> {
        let MlpShape { d, m, c, .. } = self.shape;
        let rows = p.rows as usize;
        let f = |b: u32, floats: usize, at: usize| (b, 4 * at as u64, 4 * floats as u64);
        let mut jobs = vec![
            Job {
                k: K::MmH as usize,
                p,
                grid: [m.div_ceil(TILE) as u32, rows.div_ceil(TILE) as u32, 1],
                outputs: vec![f(B_H, rows * m, 0)],
            },
            Job {
                k: K::Head as usize,
                p,
                grid: self.grid1(rows.div_ceil(64)),
                outputs: vec![
                    f(B_RL, rows * c, 0),
                    f(B_RL, rows, p.loss_off as usize + p.a0 as usize),
                ],
            },
        ];
        if train {
            let first = p.flags & F_ACC == 0;
            let out = |b, floats, at| {
                if first {
                    vec![f(b, floats, at)]
                } else {
                    vec![]
                }
            };
            jobs.push(Job {
                k: K::GradV as usize,
                p,
                grid: self.grid1(m * c),
                outputs: out(B_G, m * c, m * d),
            });
            jobs.push(Job {
                k: K::GradH as usize,
                p,
                grid: self.grid1((rows * m).div_ceil(256)),
                outputs: vec![],
            });
            jobs.push(Job {
                k: K::MmGu as usize,
                p,
                grid: [d.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1],
                outputs: out(B_G, m * d, 0),
            });
        }
        jobs
    }

    /// Runs the blocks of a batch (`None`: every sample): per block the jobs `make` gives for
    /// its parameters, then `tail`; reads `read` (binding, byte offset, bytes) at the end.
    /// `per_block` gets each block's readback (and submits each block on its own).
    fn run_blocks(
        &mut self,
        batch: Option<&[u32]>,
        train: bool,
        mut tail: Vec<Job>,
        mut per_block: Option<&mut BlockSink<'_>>,
    ) -> Result<()> {
        let len = check_batch(batch, self.shape.n)?;
        let d = self.shape.d;
        if let Some(b) = batch {
            self.ctx
                .queue
                .write_buffer(&self.q.bufs[B_IDX], 0, bytemuck::cast_slice(b));
        }
        let mut base = self.base();
        base.inv_norm = self.data.targets.inv_norm(len, self.shape.c);
        base.flags =
            if batch.is_some() { F_GATHER } else { 0 } | if self.resident { F_RESIDENT } else { 0 };
        let mut pending = Vec::new();
        let starts: Vec<usize> = (0..len).step_by(self.block).collect();
        for (bi, &a0) in starts.iter().enumerate() {
            let rows = self.block.min(len - a0);
            let mut p = base;
            p.rows = rows as u32;
            p.a0 = a0 as u32;
            if a0 > 0 {
                p.flags |= F_ACC;
            }
            pending.extend(self.block_jobs(p, train));
            let last = bi + 1 == starts.len();
            if last {
                pending.append(&mut tail);
            }
            if !self.resident {
                let data = self.data;
                self.xhost.resize(rows * d, 0.0);
                self.xhost
                    .par_chunks_mut(d)
                    .enumerate()
                    .for_each(|(t, row)| {
                        let i = batch.map_or(a0 + t, |b| b[a0 + t] as usize);
                        data.fill_row(i, row);
                    });
                self.ctx.queue.write_buffer(
                    &self.q.bufs[B_X],
                    0,
                    bytemuck::cast_slice(&self.xhost),
                );
            }
            if let Some(cb) = per_block.as_deref_mut() {
                let bytes =
                    self.submit(&pending, Some((B_RL, 0, 4 * (rows * self.shape.c) as u64)))?;
                cb(&bytes);
                pending.clear();
            } else if !self.resident || last {
                self.submit(&pending, None)?;
                pending.clear();
            }
        }
        Ok(())
    }

    fn submit(&self, jobs: &[Job], read: Option<(u32, u64, u64)>) -> Result<Vec<u8>> {
        self.q.submit(jobs, read)
    }

    fn read_floats(&self, binding: u32, at: usize, len: usize) -> Result<Vec<f32>> {
        self.q.read_floats(binding, at, len)
    }

    fn reduce_job(&self, count: usize, slot: u32) -> Job {
        let mut p = self.base();
        p.count = count as u32;
        p.slot = slot;
        Job {
            k: K::Reduce as usize,
            p,
            grid: [1, 1, 1],
            outputs: vec![(B_SCAL, 4 * slot as u64, 4)],
        }
    }

    fn need_targets(&self) -> Result<()> {
        if matches!(self.data.targets, Targets::None) {
            return Err(Error::invalid(
                Param::Outputs,
                "this network was built for prediction only (no targets)",
            ));
        }
        Ok(())
    }

    fn check_weights(&self, u: usize, v: usize) -> Result<()> {
        if u != self.shape.u_len() || v != self.shape.v_len() {
            return Err(Error::invalid(Param::Model, "U must be m×d and V m×C"));
        }
        Ok(())
    }
}

impl DenseMlp for GpuMlp<'_> {
    fn shape(&self) -> MlpShape {
        self.shape
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "gpu",
            adapter: self.ctx.adapter_name(),
        }
    }

    fn set_weights(&mut self, u: &[f32], v: &[f32]) -> Result<()> {
        self.check_weights(u.len(), v.len())?;
        crate::error::check_finite("weights", u)?;
        crate::error::check_finite("weights", v)?;
        let q = &self.ctx.queue;
        q.write_buffer(&self.q.bufs[B_W as usize], 0, bytemuck::cast_slice(u));
        q.write_buffer(
            &self.q.bufs[B_W as usize],
            4 * u.len() as u64,
            bytemuck::cast_slice(v),
        );
        Ok(())
    }

    fn set_mask(&mut self, u: &[bool], v: &[bool]) -> Result<()> {
        self.check_weights(u.len(), v.len())?;
        let mask: Vec<f32> = u.iter().chain(v).map(|&b| b as u8 as f32).collect();
        self.ctx
            .queue
            .write_buffer(&self.q.bufs[B_MASK], 0, bytemuck::cast_slice(&mask));
        Ok(())
    }

    fn weights(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut w = self.read_floats(B_W, 0, self.shape.weights())?;
        let v = w.split_off(self.shape.u_len());
        Ok((w, v))
    }

    fn gradients(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut g = self.read_floats(B_G, 0, self.shape.weights())?;
        let v = g.split_off(self.shape.u_len());
        Ok((g, v))
    }

    fn forward_backward(&mut self, batch: Option<&[u32]>) -> Result<()> {
        self.need_targets()?;
        let len = check_batch(batch, self.shape.n)?;
        let tail = vec![self.reduce_job(len, SLOT_TRAIN)];
        self.run_blocks(batch, true, tail, None)?;
        self.trained = true;
        Ok(())
    }

    fn last_loss(&mut self) -> Result<f64> {
        if !self.trained {
            return Err(Error::invalid(Param::Model, "no forward pass has run yet"));
        }
        Ok(self.read_floats(B_SCAL, SLOT_TRAIN as usize, 1)?[0] as f64)
    }

    fn loss(&mut self, batch: Option<&[u32]>) -> Result<f64> {
        self.need_targets()?;
        let len = check_batch(batch, self.shape.n)?;
        let tail = vec![self.reduce_job(len, SLOT_EVAL)];
        self.run_blocks(batch, false, tail, None)?;
        Ok(self.read_floats(B_SCAL, SLOT_EVAL as usize, 1)?[0] as f64)
    }

    fn reset_adam(&mut self) -> Result<()> {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("imp") });
        enc.clear_buffer(&self.q.bufs[B_M1], 0, None);
        enc.clear_buffer(&self.q.bufs[B_M2], 0, None);
        self.ctx.queue.submit([enc.finish()]);
        self.ctx.take_error()
    }

    fn adam_step(&mut self, step: &AdamStep) -> Result<()> {
        let s = step.scalars();
        let mut p = self.base();
        p.step = s.step_size;
        p.bc2s = s.bc2_sqrt;
        p.beta2 = step.beta2;
        p.omb1 = s.one_minus_b1;
        p.omb2 = s.one_minus_b2;
        p.eps = step.eps;
        let job = Job {
            k: K::Adam as usize,
            p,
            grid: self.grid1(self.shape.weights().div_ceil(256)),
            outputs: vec![],
        };
        self.submit(&[job], None)?;
        Ok(())
    }

    fn predict(&mut self, batch: Option<&[u32]>) -> Result<Vec<f32>> {
        let len = check_batch(batch, self.shape.n)?;
        let mut out = Vec::with_capacity(len * self.shape.c);
        let mut keep = |bytes: &[u8]| out.extend(bytemuck::pod_collect_to_vec::<u8, f32>(bytes));
        // Outputs only: the head runs without targets.
        let targets = self.data.targets;
        self.data.targets = &Targets::None;
        let r = self.run_blocks(batch, false, Vec::new(), Some(&mut keep));
        self.data.targets = targets;
        r?;
        Ok(out)
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}
