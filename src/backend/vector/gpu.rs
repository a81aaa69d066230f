//! The wgpu backend of [`VectorBackend`]: `shaders/vector.wgsl`, one entry point per job, on
//! [`JobQueue`].
//!
//! The features, targets, the two `n × C` residual blocks and the per-sample losses live on
//! the device; the `s` weights of each slot stay on the host (a few KB) and go up as a plan
//! (per-unit entry ranges, columns, values) with each pass that needs them, so no `m×d` or
//! `n×m` buffer exists anywhere. Per call:
//! - `forward`/`trial`: `forward` (a thread per sample: pre-activations on the support,
//!   scores, loss and `∂loss/∂f`), losses read back and summed in order on the host;
//! - `gradient`: `support_grad`, a workgroup per support entry (fixed-order tree sum);
//! - `threshold`: per tile of units `tile_z` (`X · gateᵀ`), `tile_eh` (passed-back residual
//!   and activation), `tile_grad` (the tile's `t × (d + C)` gradient), read back into the
//!   host's running top-`s` or count-sketch ([`DenseSelect`], shared with the CPU backend).
//!
//! The tile holds `3·n·t` floats of per-sample values: `t` is chosen so that it fits
//! [`TILE_BYTES`] and one storage binding, so memory stays linear in `s + n·C` plus a tile.

use super::cpu::plan;
use super::{
    check_batch, check_weights, tile_rows, DenseSelect, Selection, Targets, VectorBackend,
    VectorProblem,
};
use crate::backend::gpu::interface::{shared_struct, Member, SharedStruct, WgslType};
use crate::backend::gpu::jobs::{Job, JobQueue, Kernel, Module};
use crate::backend::gpu::GpuContext;
use crate::backend::{BackendInfo, MemoryMeter, MemoryStats, Slot};
use crate::error::{Error, Result};
use crate::sparse::{SparseVec, TopS};
use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;
use std::sync::Arc;

pub const VECTOR_WGSL: &str = include_str!("../../../shaders/vector.wgsl");

/// Bytes the dense pass's per-sample tile values (`3·n·t` floats) aim for.
pub const TILE_BYTES: u64 = 64 << 20;
const JOBS_PER_SUBMIT: usize = 16;

shared_struct! {
    /// The parameter block of every job (shaders/vector.wgsl `VectorParams`).
    pub struct VectorParams {
        /// Active samples.
        pub rows: u32,
        pub d: u32,
        pub c: u32,
        /// Units in the uploaded plan.
        pub units: u32,
        /// Support entries.
        pub entries: u32,
        /// `forward`: 0 scores only, 1 squared error, 2 cross-entropy.
        pub mode: u32,
        /// Float offset of the residual block written (`forward`) or read (the others).
        pub r_off: u32,
        /// Units in the dense-pass tile.
        pub t: u32,
        /// Offset of `E` (then `H`) in `Z`.
        pub zh: u32,
        /// `1 / rows`.
        pub inv_n: f32,
        pub pad0: u32,
        pub pad1: u32,
    }
}

type Params = VectorParams;

/// Bindings of shaders/vector.wgsl by name (0 is the parameter block), and whether the shader
/// declares them read-only: the Rust side of the drift test in `tests/shader_interface.rs`.
pub const BINDINGS: [(&str, u32, bool); 14] = [
    ("X", B_X, true),
    ("IDX", B_IDX, true),
    ("Y", B_Y, true),
    ("UNITS", B_UNITS, true),
    ("SCOL", B_SCOL, true),
    ("SVAL", B_SVAL, true),
    ("ENT", B_ENT, true),
    ("R", B_R, false),
    ("L", B_L, false),
    ("G", B_G, false),
    ("GATE", B_GATE, true),
    ("TW", B_TW, true),
    ("Z", B_Z, false),
    ("TG", B_TG, false),
];

const B_X: u32 = 1;
const B_IDX: u32 = 2;
const B_Y: u32 = 3;
const B_UNITS: u32 = 4;
const B_SCOL: u32 = 5;
const B_SVAL: u32 = 6;
const B_ENT: u32 = 7;
const B_R: u32 = 8;
const B_L: u32 = 9;
const B_G: u32 = 10;
const B_GATE: u32 = 11;
const B_TW: u32 = 12;
const B_Z: u32 = 13;
const B_TG: u32 = 14;

/// The read-only bindings, from [`BINDINGS`].
fn read_only() -> Vec<u32> {
    BINDINGS.iter().filter(|b| b.2).map(|b| b.1).collect()
}

const K_FORWARD: usize = 0;
const K_SUPPORT_GRAD: usize = 1;
const K_TILE_Z: usize = 2;
const K_TILE_EH: usize = 3;
const K_TILE_GRAD: usize = 4;
const KERNELS: [Kernel; 5] = [
    Kernel {
        entry: "forward",
        bindings: &[1, 2, 3, 4, 5, 6, 8, 9],
    },
    Kernel {
        entry: "support_grad",
        bindings: &[1, 2, 4, 5, 6, 7, 8, 10],
    },
    Kernel {
        entry: "tile_z",
        bindings: &[1, 2, 11, 13],
    },
    Kernel {
        entry: "tile_eh",
        bindings: &[8, 12, 13],
    },
    Kernel {
        entry: "tile_grad",
        bindings: &[1, 2, 8, 13, 14],
    },
];

pub struct GpuVector {
    p: Arc<VectorProblem>,
    q: JobQueue<Params>,
    slots: Vec<SparseVec>,
    /// Active samples (the batch, or all).
    rows: usize,
    batch: Option<Vec<u32>>,
    /// Which residual block (0 or 1) holds the current residual; the other takes trials.
    cur: usize,
    select: DenseSelect,
    /// Units per dense-pass tile.
    tile: usize,
    pub recruit: bool,
    meter: MemoryMeter,
}

impl GpuVector {
    pub fn new(ctx: Arc<GpuContext>, p: Arc<VectorProblem>, s: usize) -> Result<Self> {
        if s == 0 || s > p.signal_len() {
            return Err(Error::invalid(
                crate::error::Param::Nonzeros,
                format!(
                    "s = {s} must be between 1 and m·(d + C) = {}",
                    p.signal_len()
                ),
            ));
        }
        let (n, d, m, c) = (p.n, p.d, p.m, p.c);
        let lim = ctx.limits();
        let bind_max = lim
            .max_storage_buffer_binding_size
            .min(lim.max_buffer_size)
            .min(4 * u32::MAX as u64);
        let limit = |what: &'static str, needed: u64| {
            Error::DeviceLimit {
            what,
            needed,
            limit: bind_max,
            fix: "use fewer samples or features (--batch-size does not shrink them), or --backend cpu",
        }
        };
        let x_bytes = 4 * n as u64 * d as u64;
        if x_bytes > bind_max {
            return Err(limit(
                "the feature matrix, n·d floats (limits.max_storage_buffer_binding_size)",
                x_bytes,
            ));
        }
        let r_bytes = 8 * n as u64 * c as u64;
        if r_bytes > bind_max {
            return Err(limit("the two n×C residual blocks", r_bytes));
        }
        let per_unit = 12 * n as u64;
        let tile = (TILE_BYTES.min(bind_max) / per_unit).clamp(1, m as u64) as usize;
        if per_unit > bind_max {
            return Err(limit("one unit's per-sample values (3·n floats)", per_unit));
        }
        let mut meter = MemoryMeter::default();
        use wgpu::BufferUsages as U;
        let storage = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let mut make = |label: &str, bytes: u64, usage: wgpu::BufferUsages| {
            crate::backend::gpu::create_buffer(&ctx, &mut meter, label, bytes, usage)
        };
        let units_max = m.min(s) as u64;
        let bufs = vec![
            make(
                "vector params",
                JobQueue::<Params>::params_bytes(&ctx, JOBS_PER_SUBMIT),
                U::UNIFORM | U::COPY_DST,
            ),
            make("vector X", x_bytes, storage),
            make("vector idx", 4 * n as u64, storage),
            make("vector y", 4 * (n * c) as u64, storage),
            make("vector units", 20 * units_max, storage),
            make("vector cols", 4 * s as u64, storage),
            make("vector values", 4 * s as u64, storage),
            make("vector entry units", 4 * s as u64, storage),
            make("vector R", r_bytes, storage),
            make("vector L", 4 * n as u64, storage),
            make("vector G", 4 * s as u64, storage),
            make("vector gate", 4 * (tile * d) as u64, storage),
            make("vector tile W2", 4 * (tile * (c + 1)) as u64, storage),
            make("vector Z", per_unit * tile as u64, storage),
            make("vector tile G", 4 * (tile * (d + c)) as u64, storage),
        ];
        let staging = 4 * [n * c, tile * (d + c), s, n].into_iter().max().unwrap_or(1) as u64;
        meter.alloc(staging);
        let q = JobQueue::new(
            ctx.clone(),
            Module {
                label: "vector",
                source: VECTOR_WGSL,
                kernels: &KERNELS,
                read_only: &read_only(),
            },
            bufs,
            staging,
            JOBS_PER_SUBMIT,
        )?;
        let select = DenseSelect::new(&p, s);
        meter.alloc((Slot::COUNT * s * 8 + select.bytes()) as u64);
        let queue = &ctx.queue;
        queue.write_buffer(&q.bufs[B_X as usize], 0, bytemuck::cast_slice(&p.x));
        let y: Vec<f32> = match &p.targets {
            Targets::Values(y) => y.clone(),
            Targets::Classes(l) => l.iter().map(|&v| v as f32).collect(),
        };
        queue.write_buffer(&q.bufs[B_Y as usize], 0, bytemuck::cast_slice(&y));
        let mut b = GpuVector {
            slots: vec![SparseVec::new(); Slot::COUNT],
            rows: n,
            batch: None,
            cur: 0,
            select,
            tile,
            recruit: true,
            meter,
            q,
            p,
        };
        b.set_batch(None)?;
        Ok(b)
    }

    /// Test aid: poison every kernel's outputs with NaN before it runs.
    pub fn set_poison(&mut self, on: bool) {
        self.q.set_poison(on);
    }

    /// Test aid: units per dense-pass tile (at most the allocated one), to run several tiles.
    pub fn set_tile(&mut self, units: usize) {
        self.tile = units.clamp(1, self.tile);
    }

    /// Float offset of residual block `block` in `R`.
    fn r_off(&self, block: usize) -> u32 {
        (block * self.p.n * self.p.c) as u32
    }

    /// Parameters every job shares; the current residual block at `r_off`.
    fn base(&self) -> Params {
        Params {
            r_off: self.r_off(self.cur),
            rows: self.rows as u32,
            d: self.p.d as u32,
            c: self.p.c as u32,
            inv_n: 1.0 / self.rows as f32,
            mode: match self.p.targets {
                Targets::Values(_) => 1,
                Targets::Classes(_) => 2,
            },
            ..Default::default()
        }
    }

    /// Uploads `v`'s plan; returns (units, entries).
    fn upload(&self, v: &SparseVec) -> (usize, usize) {
        let pl = plan(v, self.p.d, self.p.c, self.p.w2_offset());
        // The plan orders entries as v does (W1 block, then W2), so values go up as they are.
        let mut units = Vec::with_capacity(5 * pl.units.len());
        let mut ent = vec![0u32; v.len()];
        for (u, (j, r1, r2)) in pl.units.iter().enumerate() {
            units.extend([
                *j as u32,
                r1.start as u32,
                r1.end as u32,
                r2.start as u32,
                r2.end as u32,
            ]);
            for q in r1.clone().chain(r2.clone()) {
                ent[q] = u as u32;
            }
        }
        let queue = &self.q.ctx().queue;
        let put = |b: u32, bytes: &[u8]| {
            if !bytes.is_empty() {
                queue.write_buffer(&self.q.bufs[b as usize], 0, bytes);
            }
        };
        put(B_UNITS, bytemuck::cast_slice(&units));
        put(B_SCOL, bytemuck::cast_slice(&pl.col));
        put(B_SVAL, bytemuck::cast_slice(&v.values));
        put(B_ENT, bytemuck::cast_slice(&ent));
        (pl.units.len(), v.len())
    }

    /// Loss of `v` on the active samples, its residual into residual block `block`.
    fn loss(&self, v: &SparseVec, block: usize) -> Result<f64> {
        let (units, entries) = self.upload(v);
        let mut p = self.base();
        p.units = units as u32;
        p.entries = entries as u32;
        p.r_off = self.r_off(block);
        let c = self.p.c as u64;
        let job = Job {
            k: K_FORWARD,
            p,
            grid: self.q.grid1(self.rows.div_ceil(64)),
            outputs: vec![
                (B_R, 4 * p.r_off as u64, 4 * self.rows as u64 * c),
                (B_L, 0, 4 * self.rows as u64),
            ],
        };
        let bytes = self
            .q
            .submit(&[job], Some((B_L, 0, 4 * self.rows as u64)))?;
        let losses: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / self.rows as f64;
        Ok(loss)
    }
}

impl VectorBackend for GpuVector {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "gpu",
            adapter: self.q.ctx().adapter_name(),
        }
    }

    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()> {
        check_weights(&self.p, w)?;
        self.slots[slot.index()] = w.clone();
        Ok(())
    }

    fn read(&mut self, slot: Slot) -> Result<SparseVec> {
        Ok(self.slots[slot.index()].clone())
    }

    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()> {
        self.slots[dst.index()] = self.slots[src.index()].clone();
        Ok(())
    }

    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()> {
        check_batch(&self.p, batch)?;
        let all: Vec<u32>;
        let idx = match batch {
            Some(b) => b,
            None => {
                all = (0..self.p.n as u32).collect();
                &all
            }
        };
        self.rows = idx.len();
        self.batch = batch.map(|b| b.to_vec());
        self.q
            .ctx()
            .queue
            .write_buffer(&self.q.bufs[B_IDX as usize], 0, bytemuck::cast_slice(idx));
        Ok(())
    }

    fn forward(&mut self, v: Slot) -> Result<f64> {
        self.loss(&self.slots[v.index()], self.cur)
    }

    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        let vv = self.slots[v.index()].clone();
        let values = if vv.is_empty() {
            Vec::new()
        } else {
            let (units, entries) = self.upload(&vv);
            let mut p = self.base();
            p.units = units as u32;
            p.entries = entries as u32;
            let job = Job {
                k: K_SUPPORT_GRAD,
                p,
                grid: self.q.grid1(entries),
                outputs: vec![(B_G, 0, 4 * entries as u64)],
            };
            let bytes = self.q.submit(&[job], Some((B_G, 0, 4 * entries as u64)))?;
            bytemuck::pod_collect_to_vec(&bytes)
        };
        let gv = SparseVec {
            indices: vv.indices,
            values,
        };
        let n2 = gv.norm2();
        self.slots[g.index()] = gv;
        Ok(n2)
    }

    fn trial(&mut self, v: Slot, g: Slot, dst: Slot, mu: f32) -> Result<f64> {
        let t = self.slots[v.index()]
            .plus_scaled(&self.slots[g.index()], -mu)
            .ok_or_else(|| {
                Error::invalid(crate::error::Param::Slot, "trial needs g on v's support")
            })?;
        let loss = self.loss(&t, 1 - self.cur)?;
        self.slots[dst.index()] = t;
        Ok(loss)
    }

    fn accept_trial(&mut self) -> Result<()> {
        self.cur = 1 - self.cur;
        Ok(())
    }

    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot, how: Selection) -> Result<()> {
        let (d, c, m) = (self.p.d, self.p.c, self.p.m);
        let wv = self.slots[w.index()].clone();
        self.meter.alloc(TopS::capacity_bytes(s) as u64);
        let mut top = TopS::new(s);
        let rows = self.rows;
        for j0 in (0..m).step_by(self.tile) {
            let t = self.tile.min(m - j0);
            let (gate, has_w1, w2t) = tile_rows(&self.p, &wv, j0, t, self.recruit);
            let mut tw = w2t;
            tw.extend(has_w1.iter().map(|&h| h as u8 as f32));
            let queue = &self.q.ctx().queue;
            queue.write_buffer(
                &self.q.bufs[B_GATE as usize],
                0,
                bytemuck::cast_slice(&gate),
            );
            queue.write_buffer(&self.q.bufs[B_TW as usize], 0, bytemuck::cast_slice(&tw));
            let mut p = self.base();
            p.t = t as u32;
            p.zh = (rows * t) as u32;
            let zt = 4 * (rows * t) as u64;
            let jobs = [
                Job {
                    k: K_TILE_Z,
                    p,
                    grid: self.q.grid1((rows * t).div_ceil(64)),
                    outputs: vec![(B_Z, 0, zt)],
                },
                Job {
                    k: K_TILE_EH,
                    p,
                    grid: self.q.grid1((rows * t).div_ceil(64)),
                    outputs: vec![(B_Z, zt, 2 * zt)],
                },
                Job {
                    k: K_TILE_GRAD,
                    p,
                    grid: self.q.grid1((t * (d + c)).div_ceil(64)),
                    outputs: vec![(B_TG, 0, 4 * (t * (d + c)) as u64)],
                },
            ];
            let bytes = self
                .q
                .submit(&jobs, Some((B_TG, 0, 4 * (t * (d + c)) as u64)))?;
            let tg: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            let (mut g1, mut g2) = (Vec::with_capacity(t * d), Vec::with_capacity(t * c));
            for row in tg.chunks(d + c) {
                g1.extend_from_slice(&row[..d]);
                g2.extend_from_slice(&row[d..]);
            }
            self.select
                .push_tile(&self.p, &mut top, how, &wv, mu, j0, &g1, &g2);
        }
        self.slots[dst.index()] = self.select.finish(&self.p, top, how);
        self.meter.free(TopS::capacity_bytes(s) as u64);
        Ok(())
    }

    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        // Scores of every sample, into the trial block (the current residual stays).
        let batch = self.batch.take();
        if batch.is_some() {
            self.set_batch(None)?;
        }
        let vv = self.slots[v.index()].clone();
        let (units, entries) = self.upload(&vv);
        let mut p = self.base();
        p.units = units as u32;
        p.entries = entries as u32;
        p.mode = 0;
        p.r_off = self.r_off(1 - self.cur);
        let (at, out) = (4 * p.r_off as u64, 4 * (self.rows * self.p.c) as u64);
        let job = Job {
            k: K_FORWARD,
            p,
            grid: self.q.grid1(self.rows.div_ceil(64)),
            outputs: vec![(B_R, at, out)],
        };
        let bytes = self.q.submit(&[job], Some((B_R, at, out)))?;
        if let Some(b) = batch {
            self.set_batch(Some(&b))?;
        }
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}
