//! The wgpu backend: the whole IHT step runs in WGSL compute kernels (`shaders/*.wgsl`) on
//! device-resident slots; a trait call is one submission and reads back only its scalars.
//!
//! - `context`: adapter selection, device creation with the adapter's real limits.
//! - `buffers`: the region layout inside a few large buffers, byte accounting.
//! - `kernels`: pipelines, the bind group, command recording and readback, and the
//!   timestamp timer behind `spinr bench` (one pass per dispatch, begin/end timestamps).
//! - `ceilings`: measured bandwidth / FMA throughput for `spinr bench`.
//!
//! Kernels (one entry point each):
//! - support passes (`support.wgsl`): `runs` groups a support into per-neuron runs; `mask`
//!   (`gates.wgsl`) evaluates its gates into a bit mask (`min(m, s) × n` bits), cached by
//!   (support, gates, minibatch) so a refinement evaluates the gates once per step; `apply`
//!   and `apply_fin` give `A_S v − y` with compensated sums; `grad` gives `A_Sᵀ r` (a workgroup
//!   per entry); `axpy`, `copy_slot`, `reduce` (fixed-order tree sums, no float atomics).
//! - refinement batch (`support.wgsl`, [`Backend::refine_exact`]): up to `REFINE_MAX` exact
//!   refinement steps in one submission, read back once. Per step 8 dispatches: `grad`,
//!   `apply` + `apply_fin` of g, `refine_mu` (‖g‖², ‖A g‖² and μ on the device), `axpy` (μ from
//!   the scalar region), `apply` + `apply_fin` of the trial (residual into the other region),
//!   `refine_decide` (f(trial), the host's Armijo test, the step's record). Recorded as if every
//!   step were accepted: the iterate alternates between the two slots and the residual between
//!   the two regions, so acceptance copies nothing; the first rejection sets a stop word that
//!   every later kernel of the chain (`FLAG_GUARD`) reads with `workgroupUniformLoad` and
//!   returns on; one conditional `copy_slot` at the end brings the iterate back to its slot.
//!   A stop word rather than indirect dispatch: wgpu validates every indirect dispatch by
//!   default (`InstanceFlags::VALIDATION_INDIRECT_CALL`, release builds too) with an extra
//!   dispatch and barriers, which would double the chain's dispatches in the common case where
//!   every step is accepted.
//! - dense pass, per tile of neurons and chunk of active samples: `gen_h` (`gates.wgsl`)
//!   writes the tile's random gate vectors; `tile_mask` evaluates the tile's gates into bits
//!   (`tile × chunk` bits: a tile buffer, independent of `m` and of `n` beyond the chunk),
//!   assembling each 32-sample word with a subgroup OR where the adapter has 32-wide
//!   subgroups (`bits_subgroup.wgsl`) and workgroup atomics otherwise (`bits_atomic.wgsl`);
//!   `dense_mm` (`dense.wgsl`) computes `G = Xᵀ(D ∘ r)` as a tiled matrix product (128
//!   neurons × 128 features per workgroup, 8 × 8 register block per thread, split over sample
//!   groups into partial rows); `reduce_tile` (`topk.wgsl`) sums the groups in order into
//!   `c = w − μ G` (`add_w` adds `w`).
//! - X (dense or materialised grid features) is stored feature-major, so a warp of
//!   consecutive samples reads one segment per feature in every kernel.
//! - top-s (`topk.wgsl`): 3-digit radix select (`hist` with workgroup atomics, `select_digit`)
//!   of the tile merged with the running buffer, then an ordered compaction (`count`, `scan`,
//!   `scatter`) that keeps the result sorted and sends ties to the lower index.

mod buffers;
mod ceilings;
mod context;
pub mod interface;
mod kernels;

pub use context::{list_adapters, AdapterReport, GpuContext, NO_ADAPTER_HELP};
pub use kernels::{
    compose_shader, BITS_ATOMIC_WGSL, BITS_SUBGROUP_WGSL, COMMON_WGSL, SHADER_FILES,
};

use super::{Backend, BackendInfo, GateSource, MemoryMeter, MemoryStats, RefineStep, Slot};
use crate::error::{Error, Result};
use crate::problem::{Features, GateMode, Problem};
use crate::sparse::SparseVec;
use buffers::{
    Buffers, Layout, APPLY_THREADS, MAX_APPLY_CHUNKS, NSLOT, REFINE_MAX, SLOT_GATE, SLOT_TOP_A,
    SLOT_TOP_B,
};
use interface::{
    Op, DENSE_BLOCK_FEATURES, DENSE_BLOCK_NEURONS, FLAG_ACC, FLAG_GUARD, FLAG_IF_ODD, FLAG_MU_SC,
    FLAG_RUNMASK, FLAG_STORE, FLAG_SUB_Y, GATE_NEURONS, GATE_OPEN, GATE_RANDOM, GATE_WEIGHTS,
    META_STOP, REC_LEN, SAMPLE_BLOCK, SCALARS, SCAN_BLOCK, SC_FV, SC_REC, TILE_MASK_BLOCKS,
    TILE_MASK_NEURONS, WG_SIZE,
};
use kernels::{Kernels, Read, Rec, K};
use std::sync::Arc;

/// Grid features are uploaded as a dense matrix when it takes at most this many bytes (and
/// fits four bindings): the kernels then load instead of evaluating sin/cos. Larger grids are
/// generated on the fly.
pub const DEFAULT_FEATURE_CACHE: u64 = 1 << 30;

/// Workgroups the dense product aims for (a few per core on a large GPU).
const DENSE_WORKGROUPS: usize = 512;
/// Options beyond the trait's (tests use them to force the on-the-fly feature path).
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Largest grid-feature matrix, in bytes, that is materialised on the device.
    pub feature_cache_bytes: u64,
    /// Neurons per dense-pass tile (rounded up to a multiple of 8); `None`: about 128 Ki
    /// candidates per tile. Small tiles exercise the streaming merge.
    pub tile_neurons: Option<usize>,
    /// Caps the bytes of one feature-matrix binding below the device's limit (the matrix is
    /// then split by rows across up to four bindings; tests use it to exercise that path).
    pub feature_binding_bytes: Option<u64>,
    /// Threads the support apply aims for: with fewer samples it splits the support's runs
    /// into chunks (up to 64) whose partial predictions are then merged. `None`: 65536 on a
    /// GPU, one thread per sample on a CPU adapter (whose few cores gain nothing from it).
    pub apply_threads: Option<usize>,
    /// Use subgroup operations where the device has 32-wide subgroups (false: the portable
    /// workgroup-memory path everywhere; tests compare the two).
    pub subgroups: bool,
    /// Store dense features feature-major (full-batch fits: coalesced reads) rather than
    /// sample-major (minibatch fits: a thread's features of one scattered sample in one row).
    pub feature_major: bool,
    /// Active samples per dense-pass chunk (rounded up to a multiple of 32); `None`: 2^18.
    /// Small chunks exercise the accumulation across chunks.
    pub mask_chunk: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            feature_cache_bytes: DEFAULT_FEATURE_CACHE,
            tile_neurons: None,
            feature_binding_bytes: None,
            // A tuning knob for new hardware, without a rebuild.
            apply_threads: std::env::var("SPINR_APPLY_THREADS")
                .ok()
                .and_then(|v| v.parse().ok()),
            mask_chunk: None,
            subgroups: true,
            feature_major: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gates {
    Open,
    Random,
    Weights,
}

/// What the cached runs and gate mask were built for: (support id, gate epoch, batch epoch;
/// `None` = all samples).
type MaskKey = (u64, u64, Option<u64>);

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    problem: Arc<Problem>,
    lay: Layout,
    bufs: Buffers,
    kernels: Kernels,
    /// Which of the two residual regions holds the current residual.
    cur: usize,
    n_act: usize,
    batch_epoch: Option<u64>,
    epochs: u64,
    gates: Gates,
    gate_epoch: u64,
    /// Support id of the weight-gate snapshot (None: random or open gates).
    gate_sup: Option<u64>,
    /// Support identity per slot: equal ids mean equal index lists.
    sup: [u64; NSLOT],
    next_sup: u64,
    mask_key: Option<MaskKey>,
    last_gnorm: f64,
    meter: MemoryMeter,
    /// See [`GpuOptions::apply_threads`].
    apply_threads: usize,
}

impl GpuBackend {
    /// Prepares a fit of `problem` with at most `s` nonzeros on the context's device.
    pub fn new(ctx: Arc<GpuContext>, problem: Arc<Problem>, s: usize) -> Result<Self> {
        Self::with_options(ctx, problem, s, GpuOptions::default())
    }

    pub fn with_options(
        ctx: Arc<GpuContext>,
        problem: Arc<Problem>,
        s: usize,
        opts: GpuOptions,
    ) -> Result<Self> {
        problem.validate()?;
        problem.check_nonzeros(s)?;
        let (n, d) = (problem.n, problem.d);
        // Dense features: given, or a grid small enough to materialise.
        let binding = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size)
            .min(opts.feature_binding_bytes.unwrap_or(u64::MAX));
        // Whole rows per binding, four bindings.
        let fits = (binding / (4 * d as u64)) * 4 >= n as u64;
        let cached: Option<Vec<f32>> = match &problem.features {
            Features::Grid(g) if (n * d * 4) as u64 <= opts.feature_cache_bytes && fits => {
                let mut x = vec![0f32; n * d];
                use rayon::prelude::*;
                x.par_chunks_mut(d)
                    .enumerate()
                    .for_each(|(i, row)| g.fill_row(i, row));
                Some(x)
            }
            _ => None,
        };
        let (grid, dense): (Option<&crate::problem::GridFourier>, Option<&[f32]>) =
            match (&problem.features, &cached) {
                (_, Some(x)) => (None, Some(x)),
                (Features::Dense(x), None) => (None, Some(x)),
                (Features::Grid(g), None) => (Some(g), None),
            };
        let lay = Layout::new(&problem, s, grid, &opts, &ctx.limits)?;
        let mut meter = MemoryMeter::default();
        let bufs = Buffers::new(&ctx, &problem, &lay, dense, &mut meter)?;
        meter.set_tile(lay.tile_bytes);
        drop(cached);
        let kernels = Kernels::new(&ctx, &bufs, opts.subgroups && ctx.subgroups())?;
        let ctx_software = ctx.is_software();
        let gates = match problem.gates {
            GateMode::Gaussian => Gates::Open,
            _ => Gates::Random,
        };
        let mut b = GpuBackend {
            ctx,
            lay,
            bufs,
            kernels,
            cur: 0,
            n_act: n,
            batch_epoch: None,
            epochs: 0,
            gates,
            gate_epoch: 0,
            gate_sup: None,
            sup: [0; NSLOT],
            next_sup: 1,
            mask_key: None,
            last_gnorm: 0.0,
            meter,
            apply_threads: opts
                .apply_threads
                .unwrap_or(if ctx_software { 1 } else { APPLY_THREADS })
                .clamp(1, APPLY_THREADS),
            problem,
        };
        b.write_cfg();
        b.ctx.wait()?;
        Ok(b)
    }

    fn write_cfg(&mut self) {
        self.lay.cfg.gate_mode = match self.gates {
            Gates::Open => GATE_OPEN,
            Gates::Random => GATE_RANDOM,
            Gates::Weights => GATE_WEIGHTS,
        };
        self.ctx
            .queue
            .write_buffer(&self.bufs.cfg, 0, bytemuck::bytes_of(&self.lay.cfg));
    }

    fn slot(&self, s: Slot) -> Result<u32> {
        if s.index() >= Slot::COUNT {
            return Err(Error::arg("slot", format!("no slot {}", s.0)));
        }
        Ok(s.0 as u32)
    }

    fn new_support(&mut self) -> u64 {
        self.next_sup += 1;
        self.next_sup
    }

    /// An op over the active samples; `all`: every sample regardless of the minibatch.
    fn op_over(&self, all: bool) -> Op {
        if all {
            Op::active(self.lay.n, false)
        } else {
            Op::active(self.n_act, self.batch_epoch.is_some())
        }
    }

    /// An op over the active samples.
    fn op(&self) -> Op {
        self.op_over(false)
    }

    fn res(&self, which: usize) -> u32 {
        self.lay.f_res[which] as u32
    }

    /// Records the runs and gate mask of slot `v`'s support unless they are cached. `all`:
    /// for every sample regardless of the minibatch (predict).
    fn ensure_mask(&mut self, rec: &mut Rec, v: u32, all: bool) {
        let batch = if all { None } else { self.batch_epoch };
        let key = (self.sup[v as usize], self.gate_epoch, batch);
        if self.mask_key == Some(key) {
            return;
        }
        let op = self.op_over(all).runs(v);
        rec.push(K::Runs, op, [1, 1, 1]);
        if self.gates != Gates::Open {
            let blocks = (op.n_act as usize).div_ceil(SAMPLE_BLOCK);
            let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
            let (x, z) = if blocks <= max {
                (blocks, 1)
            } else {
                (max, blocks.div_ceil(max))
            };
            let groups = self.lay.cfg.max_runs.div_ceil(GATE_NEURONS as u32);
            rec.push(K::Mask, op, [groups, x as u32, z as u32]);
        }
        self.mask_key = Some(key);
    }

    /// `out = A_S v [− y]` over the active samples into F[dst] (if `store`), Σ out² into
    /// scalar `sc`.
    fn rec_apply(&self, rec: &mut Rec, v: u32, flags: u32, dst: u32, sc: u32, all: bool) {
        let groups = self.rec_apply_parts(rec, v, flags, dst, all);
        let red = self
            .op()
            .reduce_sum(self.lay.cfg.f_partial_sums, groups as u32, sc);
        rec.push(K::Reduce, red, [1, 1, 1]);
    }

    /// [`Self::rec_apply`] up to the per-workgroup partial sums of out² in `f_partial_sums`;
    /// returns their number.
    fn rec_apply_parts(&self, rec: &mut Rec, v: u32, flags: u32, dst: u32, all: bool) -> usize {
        let base = self.op_over(all);
        let n_act = base.n_act as usize;
        let groups = n_act.div_ceil(WG_SIZE);
        let chunks = self.apply_threads.div_ceil(n_act).clamp(
            1,
            MAX_APPLY_CHUNKS.min(self.lay.cfg.max_runs as usize).max(1),
        ) as u32;
        let op = base.apply(v, flags, dst, chunks);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let (x, z) = if groups <= max {
            (groups, 1)
        } else {
            (max, groups.div_ceil(max))
        };
        rec.push(K::Apply, op, [x as u32, op.run_chunks, z as u32]);
        rec.push(K::ApplyFin, op, self.kernels.grid1(groups));
        groups
    }

    /// `g = A_Sᵀ r` on the support of `v`, ‖g‖² into scalar `sc`.
    fn rec_grad(&self, rec: &mut Rec, v: u32, g: u32, sc: u32) {
        let op = self.op().grad(v, g, self.res(self.cur));
        rec.push(K::Grad, op, self.kernels.grid1(self.lay.cap));
        rec.push(K::Reduce, self.op().reduce_slot_sq(g, sc), [1, 1, 1]);
    }

    fn rec_copy(&self, rec: &mut Rec, dst: u32, src: u32) {
        rec.push(
            K::CopySlot,
            self.op().copy_slot(src, dst),
            self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE)),
        );
    }

    /// Per-kernel dispatch counts and wall seconds, when the backend was created with
    /// `SPINR_GPU_PROFILE` set (each dispatch then runs alone: for finding hot kernels only).
    pub fn kernel_profile(&self) -> Option<Vec<(&'static str, u64, f64)>> {
        let p = self.kernels.profile.as_ref()?.lock().ok()?;
        Some(
            p.iter()
                .enumerate()
                .filter(|(_, &(n, _))| n > 0)
                .map(|(i, &(n, t))| (kernels::kernel_name(i), n, t))
                .collect(),
        )
    }

    /// Up to `REFINE_MAX` exact refinement steps in one submission (see
    /// [`Backend::refine_exact`]). The steps are recorded speculatively, as if every one were
    /// accepted: the iterate alternates between slots `v` and `t` and its residual between
    /// the two residual regions, so an accepted step costs no copies. `refine_decide` stops
    /// the chain at the first rejection; a final copy brings the iterate back to `v` when it
    /// sits in `t`.
    fn refine_batch(
        &mut self,
        (qv, qg, qt): (u32, u32, u32),
        f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        let c = self.lay.cfg;
        let queue = &self.ctx.queue;
        queue.write_buffer(
            &self.bufs.u,
            (c.u_meta as usize + META_STOP) as u64 * 4,
            bytemuck::cast_slice(&[0u32, 0u32]),
        );
        queue.write_buffer(
            &self.bufs.f,
            (c.f_scalars as usize + SC_FV) as u64 * 4,
            bytemuck::bytes_of(&(f_v as f32)),
        );
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, qv, false);
        let slot_grid = self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE));
        // Every kernel of the chain returns once a step has been rejected.
        let guard = Op {
            flags: FLAG_GUARD,
            ..self.op()
        };
        for k in 0..steps {
            let (a, b) = if k % 2 == 0 { (qv, qt) } else { (qt, qv) };
            // g = A_Sᵀ r at the iterate.
            let grad = guard.grad(a, qg, self.res((self.cur + k) % 2));
            rec.push(K::Grad, grad, self.kernels.grid1(self.lay.cap));
            // ‖A g‖² partials, then ‖g‖², ‖A g‖² and μ on the device.
            let parts = self.rec_apply_parts(&mut rec, qg, FLAG_GUARD, 0, false);
            rec.push(K::RefineMu, guard.refine_mu(qg, parts as u32), [1, 1, 1]);
            // trial = v − μ g (μ from the scalar region) and its residual (in the other region).
            let axpy = Op {
                flags: FLAG_GUARD | FLAG_MU_SC,
                ..self.op()
            }
            .axpy(a, qg, b, 0.0);
            rec.push(K::Axpy, axpy, slot_grid);
            let next = self.res((self.cur + k + 1) % 2);
            let parts = self.rec_apply_parts(
                &mut rec,
                b,
                FLAG_GUARD | FLAG_SUB_Y | FLAG_STORE,
                next,
                false,
            );
            let decide = guard.refine_decide(parts as u32, k as u32);
            rec.push(K::RefineDecide, decide, [1, 1, 1]);
        }
        let fix = Op {
            flags: FLAG_IF_ODD,
            ..self.op()
        }
        .copy_slot(qt, qv);
        rec.push(K::CopySlot, fix, slot_grid);
        let reads = [
            Read {
                buffer: &self.bufs.u,
                offset: (c.u_meta as usize + META_STOP) as u64 * 4,
                bytes: 8,
            },
            Read {
                buffer: &self.bufs.f,
                offset: (c.f_scalars as usize + SC_REC) as u64 * 4,
                bytes: (REC_LEN * steps * 4) as u64,
            },
        ];
        let bytes = self.run(rec, &reads)?;
        let (stop, acc) = (
            u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize,
            u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize,
        );
        let ran = acc + stop;
        if stop > 1 || ran > steps || (stop == 0 && acc != steps) {
            return Err(Error::Gpu(format!(
                "refinement batch of {steps} steps reports {acc} accepted, stop word {stop}"
            )));
        }
        let vals: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[8..]);
        let out: Vec<RefineStep> = vals
            .chunks(REC_LEN)
            .take(ran)
            .map(|r| RefineStep {
                gn: r[0] as f64,
                curv: r[1] as f64,
                mu: r[2],
                f_t: r[3] as f64,
                accepted: r[4] != 0.0,
            })
            .collect();
        if out.iter().enumerate().any(|(i, r)| r.accepted != (i < acc)) {
            return Err(Error::Gpu(
                "refinement records disagree with the step count".into(),
            ));
        }
        // The device moved the iterate's residual `acc` times; g and t now share v's support.
        self.cur = (self.cur + acc) % 2;
        let sv = self.sup[qv as usize];
        self.sup[qg as usize] = sv;
        self.sup[qt as usize] = sv;
        if let Some(r) = out.last() {
            self.last_gnorm = r.gn;
        }
        Ok(out)
    }

    fn run(&self, rec: Rec, reads: &[Read<'_>]) -> Result<Vec<u8>> {
        kernels::submit(&self.ctx, &self.kernels, &self.bufs, rec, reads)
    }

    /// Runs `rec` and reads back the first `count` scalars.
    fn run_scalars(&self, rec: Rec, count: usize) -> Result<Vec<f64>> {
        let read = Read {
            buffer: &self.bufs.f,
            offset: self.lay.cfg.f_scalars as u64 * 4,
            bytes: (count.min(SCALARS) * 4) as u64,
        };
        let bytes = self.run(rec, &[read])?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)
            .into_iter()
            .map(|v| v as f64)
            .collect())
    }
}

/// With `SPINR_GPU_PROFILE` set, the per-kernel wall-clock profile goes to stderr at the end
/// (the fallback where the adapter has no timestamp queries; `spinr bench` uses those).
impl Drop for GpuBackend {
    fn drop(&mut self) {
        if let Some(mut p) = self.kernel_profile() {
            p.sort_by(|a, b| b.2.total_cmp(&a.2));
            eprintln!("spinr: GPU profile (each dispatch alone, wall clock):");
            for (name, n, t) in p {
                eprintln!("  {name:<16} {n:>8} dispatches {:>12.3} ms", t * 1e3);
            }
        }
    }
}

impl Backend for GpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "gpu",
            adapter: self.ctx.adapter_name(),
        }
    }

    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()> {
        let q = self.slot(slot)?;
        if w.len() > self.lay.cap {
            return Err(Error::arg(
                "model",
                format!(
                    "{} entries but the backend holds at most s = {}",
                    w.len(),
                    self.lay.cap
                ),
            ));
        }
        if w.indices.len() != w.values.len() {
            return Err(Error::arg("model", "indices and values differ in length"));
        }
        if let Some(&last) = w.indices.last() {
            if last as usize >= self.problem.signal_len() {
                return Err(Error::arg("model", "index beyond m·d"));
            }
        }
        if w.indices.windows(2).any(|p| p[0] >= p[1]) {
            return Err(Error::arg("model", "indices must be strictly increasing"));
        }
        crate::error::check_finite("weights", &w.values)?;
        let c = &self.lay.cfg;
        let at = (q * c.slot_cap) as u64 * 4;
        let queue = &self.ctx.queue;
        if !w.is_empty() {
            queue.write_buffer(
                &self.bufs.u,
                c.u_slot_indices as u64 * 4 + at,
                bytemuck::cast_slice(&w.indices),
            );
            queue.write_buffer(
                &self.bufs.f,
                c.f_slot_values as u64 * 4 + at,
                bytemuck::cast_slice(&w.values),
            );
        }
        queue.write_buffer(
            &self.bufs.u,
            (c.u_slot_len + q) as u64 * 4,
            bytemuck::bytes_of(&(w.len() as u32)),
        );
        // Nothing else needs to run; submitting an empty batch flushes the writes in order.
        self.run(Rec::default(), &[])?;
        self.sup[q as usize] = self.new_support();
        Ok(())
    }

    fn read(&mut self, slot: Slot) -> Result<SparseVec> {
        let q = self.slot(slot)?;
        let c = &self.lay.cfg;
        let span = c.slot_cap as u64 * 4;
        let reads = [
            Read {
                buffer: &self.bufs.u,
                offset: (c.u_slot_len + q) as u64 * 4,
                bytes: 4,
            },
            Read {
                buffer: &self.bufs.u,
                offset: (c.u_slot_indices + q * c.slot_cap) as u64 * 4,
                bytes: span,
            },
            Read {
                buffer: &self.bufs.f,
                offset: (c.f_slot_values + q * c.slot_cap) as u64 * 4,
                bytes: span,
            },
        ];
        let bytes = self.run(Rec::default(), &reads)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let cap = self.lay.cap;
        let len = words[0] as usize;
        if len > cap {
            return Err(Error::Gpu(format!(
                "slot {q} reports {len} entries (capacity {cap})"
            )));
        }
        let indices = words[1..1 + len].to_vec();
        let values = words[1 + cap..1 + cap + len]
            .iter()
            .map(|&b| f32::from_bits(b))
            .collect();
        Ok(SparseVec { indices, values })
    }

    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()> {
        let (d, s) = (self.slot(dst)?, self.slot(src)?);
        if d == s {
            return Ok(());
        }
        let mut rec = Rec::default();
        self.rec_copy(&mut rec, d, s);
        self.run(rec, &[])?;
        self.sup[d as usize] = self.sup[s as usize];
        Ok(())
    }

    fn set_gates(&mut self, gates: GateSource) -> Result<()> {
        let mut rec = Rec::default();
        self.gates = match (gates, self.problem.gates) {
            (_, GateMode::Gaussian) => Gates::Open,
            (GateSource::Random, _) => Gates::Random,
            (GateSource::Slot(s), _) => {
                let q = self.slot(s)?;
                // Snapshot: later changes of the slot do not move the gates.
                self.rec_copy(&mut rec, SLOT_GATE, q);
                self.gate_sup = Some(self.sup[q as usize]);
                let op = self.op();
                rec.push(
                    K::GatesPrep,
                    op,
                    self.kernels.grid1(self.lay.m.div_ceil(WG_SIZE)),
                );
                Gates::Weights
            }
        };
        if self.gates != Gates::Weights {
            self.gate_sup = None;
        }
        self.write_cfg();
        self.run(rec, &[])?;
        self.gate_epoch += 1;
        Ok(())
    }

    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()> {
        match batch {
            Some(b) => {
                if b.is_empty() || b.iter().any(|&i| i as usize >= self.problem.n) {
                    return Err(Error::arg(
                        "--batch-size",
                        "empty batch or sample out of range",
                    ));
                }
                self.ctx.queue.write_buffer(
                    &self.bufs.u,
                    self.lay.cfg.u_batch as u64 * 4,
                    bytemuck::cast_slice(b),
                );
                self.epochs += 1;
                self.batch_epoch = Some(self.epochs);
                self.n_act = b.len();
            }
            None => {
                self.batch_epoch = None;
                self.n_act = self.problem.n;
            }
        }
        Ok(())
    }

    fn forward(&mut self, v: Slot) -> Result<f64> {
        let q = self.slot(v)?;
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, q, false);
        self.rec_apply(
            &mut rec,
            q,
            FLAG_SUB_Y | FLAG_STORE,
            self.res(self.cur),
            0,
            false,
        );
        Ok(self.run_scalars(rec, 1)?[0])
    }

    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)> {
        let (qv, qg) = (self.slot(v)?, self.slot(g)?);
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, qv, false);
        self.rec_grad(&mut rec, qv, qg, 0);
        self.rec_apply(&mut rec, qg, 0, 0, 1, false);
        let s = self.run_scalars(rec, 2)?;
        self.sup[qg as usize] = self.sup[qv as usize];
        self.last_gnorm = s[0];
        Ok((s[0], s[1]))
    }

    fn trial(
        &mut self,
        v: Slot,
        g: Slot,
        dst: Slot,
        mu: f32,
        recompute_grad: bool,
    ) -> Result<(f64, f64)> {
        let (qv, qg, qd) = (self.slot(v)?, self.slot(g)?, self.slot(dst)?);
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, qv, false);
        if recompute_grad {
            self.rec_grad(&mut rec, qv, qg, 0);
        }
        let op = self.op().axpy(qv, qg, qd, mu);
        rec.push(
            K::Axpy,
            op,
            self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE)),
        );
        let trial_res = self.res(1 - self.cur);
        self.rec_apply(&mut rec, qd, FLAG_SUB_Y | FLAG_STORE, trial_res, 1, false);
        let s = self.run_scalars(rec, 2)?;
        let sv = self.sup[qv as usize];
        if recompute_grad {
            self.sup[qg as usize] = sv;
            self.last_gnorm = s[0];
        }
        self.sup[qd as usize] = sv;
        Ok((self.last_gnorm, s[1]))
    }

    fn accept_trial(&mut self) -> Result<()> {
        self.cur = 1 - self.cur;
        Ok(())
    }

    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        let (qv, qg) = (self.slot(v)?, self.slot(g)?);
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, qv, false);
        self.rec_grad(&mut rec, qv, qg, 0);
        let s = self.run_scalars(rec, 1)?;
        self.sup[qg as usize] = self.sup[qv as usize];
        self.last_gnorm = s[0];
        Ok(s[0])
    }

    fn curvature(&mut self, p: Slot) -> Result<f64> {
        let q = self.slot(p)?;
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, q, false);
        self.rec_apply(&mut rec, q, 0, 0, 1, false);
        Ok(self.run_scalars(rec, 2)?[1])
    }

    fn combine(&mut self, dst: Slot, a: Slot, b: Slot, beta: f32) -> Result<()> {
        let (qd, qa, qb) = (self.slot(dst)?, self.slot(a)?, self.slot(b)?);
        if self.sup[qa as usize] != self.sup[qb as usize] {
            return Err(Error::invalid(
                crate::error::Param::Slot,
                "combine needs two vectors with the same support",
            ));
        }
        // The axpy kernel computes a − μ·b.
        let op = self.op().axpy(qa, qb, qd, -beta);
        let mut rec = Rec::default();
        rec.push(
            K::Axpy,
            op,
            self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE)),
        );
        self.run(rec, &[])?;
        self.sup[qd as usize] = self.sup[qa as usize];
        Ok(())
    }

    fn refine_exact(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        mut f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        super::check_refine_slots(v, g, trial)?;
        let q = (self.slot(v)?, self.slot(g)?, self.slot(trial)?);
        let mut out: Vec<RefineStep> = Vec::with_capacity(steps);
        while out.len() < steps {
            let batch = self.refine_batch(q, f_v, (steps - out.len()).min(REFINE_MAX))?;
            let all = batch.last().is_some_and(|r| r.accepted);
            if let Some(r) = batch.last().filter(|r| r.accepted) {
                f_v = r.f_t;
            }
            out.extend(batch);
            if !all {
                break;
            }
        }
        Ok(out)
    }

    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()> {
        let (qw, qd) = (self.slot(w)?, self.slot(dst)?);
        if s == 0 || s > self.lay.cap {
            return Err(Error::arg(
                "--nonzeros",
                format!(
                    "threshold to s = {s}, but the backend holds 1..={}",
                    self.lay.cap
                ),
            ));
        }
        let lay = &self.lay;
        let (d, m) = (lay.d, lay.m);
        let c = &lay.cfg;
        // The running buffer starts empty.
        self.ctx.queue.write_buffer(
            &self.bufs.u,
            (c.u_slot_len + SLOT_TOP_A) as u64 * 4,
            bytemuck::bytes_of(&0u32),
        );
        // Sample groups of the product (partial rows per group, summed in order by
        // reduce_tile): enough to give every core a few workgroups. The same for every chunk
        // (a smaller last chunk leaves some groups empty; they add zero).
        let blocks_out =
            d.div_ceil(DENSE_BLOCK_FEATURES) * lay.tile_cap.min(m).div_ceil(DENSE_BLOCK_NEURONS);
        let sample_groups = DENSE_WORKGROUPS.div_ceil(blocks_out).clamp(
            1,
            lay.chunk
                .min(self.n_act)
                .div_ceil(SAMPLE_BLOCK)
                .min(lay.max_groups),
        ) as u32;
        // Weight gates whose snapshot has the support of the cached run mask (the usual
        // sequential step: gates from W, then step_size(W)): the product reads that mask
        // instead of evaluating the tile's gates again.
        let reuse_mask = self.gates == Gates::Weights
            && self
                .gate_sup
                .is_some_and(|g| self.mask_key == Some((g, self.gate_epoch, self.batch_epoch)));
        let max_wg = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let mut rec = Rec::default();
        let (mut cur, mut nxt) = (SLOT_TOP_A, SLOT_TOP_B);
        let mut tile0 = 0;
        while tile0 < m {
            let tn = lay.tile_cap.min(m - tile0);
            let elems = tn * d;
            // The tile's candidates c = w − μ G merged with the running buffer `cur` into `nxt`.
            let mut op = Op {
                slot_a: cur,
                slot_b: qw,
                slot_out: nxt,
                src_offset: self.res(self.cur),
                mu,
                tile0: tile0 as u32,
                tile_neurons: tn as u32,
                tile_elems: elems as u32,
                sample_groups,
                top_s: s as u32,
                scan_blocks: (lay.cap + elems).div_ceil(SCAN_BLOCK) as u32,
                ..self.op()
            };
            if self.gates == Gates::Random {
                rec.push(K::GenH, op, self.kernels.grid1(elems.div_ceil(WG_SIZE)));
            }
            // The product in chunks of active samples: the tile's gate mask holds one chunk.
            let mut c0 = 0;
            while c0 < self.n_act {
                let nc = lay.chunk.min(self.n_act - c0);
                let mut cop = Op {
                    chunk_start: c0 as u32,
                    chunk_len: nc as u32,
                    flags: if c0 > 0 { FLAG_ACC } else { 0 },
                    ..op
                };
                if reuse_mask {
                    cop.flags |= FLAG_RUNMASK;
                } else if self.gates != Gates::Open {
                    let blocks = nc.div_ceil(SAMPLE_BLOCK * TILE_MASK_BLOCKS);
                    let (y, z) = if blocks <= max_wg {
                        (blocks, 1)
                    } else {
                        (max_wg, blocks.div_ceil(max_wg))
                    };
                    let nw = if self.gates == Gates::Weights {
                        TILE_MASK_NEURONS
                    } else {
                        GATE_NEURONS
                    };
                    rec.push(
                        K::TileMask,
                        cop,
                        [tn.div_ceil(nw) as u32, y as u32, z as u32],
                    );
                }
                rec.push(
                    K::DenseMm,
                    cop,
                    [
                        tn.div_ceil(DENSE_BLOCK_NEURONS) as u32,
                        d.div_ceil(DENSE_BLOCK_FEATURES) as u32,
                        sample_groups,
                    ],
                );
                c0 += nc;
            }
            rec.push(
                K::ReduceTile,
                op,
                self.kernels.grid1(elems.div_ceil(WG_SIZE)),
            );
            rec.push(K::AddW, op, self.kernels.grid1(lay.cap.div_ceil(WG_SIZE)));
            let hist_groups = (lay.cap + elems).div_ceil(WG_SIZE * 16).clamp(1, 64) as u32;
            for pass in 0..3 {
                op.radix_pass = pass;
                rec.push(K::Hist, op, [hist_groups, 1, 1]);
                rec.push(K::Select, op, [1, 1, 1]);
            }
            let scan_grid = self.kernels.grid1(op.scan_blocks as usize);
            rec.push(K::Count, op, scan_grid);
            rec.push(K::Scan, op, [1, 1, 1]);
            rec.push(K::Scatter, op, scan_grid);
            std::mem::swap(&mut cur, &mut nxt);
            tile0 += tn;
        }
        self.rec_copy(&mut rec, qd, cur);
        self.run(rec, &[])?;
        self.sup[qd as usize] = self.new_support();
        Ok(())
    }

    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        let q = self.slot(v)?;
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, q, true);
        let out = self.res(2);
        self.rec_apply(&mut rec, q, FLAG_STORE, out, 2, true);
        let read = Read {
            buffer: &self.bufs.f,
            offset: out as u64 * 4,
            bytes: self.lay.n as u64 * 4,
        };
        let bytes = self.run(rec, &[read])?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }

    fn sync(&mut self) -> Result<()> {
        self.ctx.wait()
    }

    fn ceilings(&mut self) -> Result<Option<crate::bench::Ceilings>> {
        ceilings::measure(&self.ctx).map(Some)
    }

    fn set_timing(&mut self, on: bool) -> bool {
        if !on {
            self.kernels.timer = None;
            return kernels::Timer::available(&self.ctx);
        }
        if self.kernels.timer.is_none() {
            self.kernels.timer = kernels::Timer::new(&self.ctx);
        }
        self.kernels.timer.is_some()
    }

    fn take_times(&mut self) -> Option<super::GpuTimes> {
        self.kernels.timer.as_ref().map(|t| t.take())
    }
}
