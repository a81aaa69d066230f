//! The wgpu backend: the whole IHT step runs in WGSL compute kernels (`shaders/*.wgsl`) on
//! device-resident slots; a trait call is one submission and reads back only its scalars.
//!
//! - `options`: [`GpuOptions`].
//! - `context`: adapter selection, device creation with the adapter's real limits.
//! - `interface`: the `Cfg` and `Op` blocks, bindings and constants shared with the shaders,
//!   defined once and written into every composed shader.
//! - `buffers`: the region layout inside a few large buffers, byte accounting.
//! - `kernels`: shader composition, pipelines, the bind group.
//! - `record`: command recording, submission and readback.
//! - `support`, `refine`, `threshold`: what each trait call records (support passes and the
//!   mask cache; the speculative refinement batch; the dense pass with top-s).
//! - `timer`, `profile`, `ceilings`: device timestamps per dispatch, the profiling entry
//!   points, measured bandwidth / FMA throughput (`spinr bench`).
//! - this file: [`GpuBackend`], its state, and the [`Backend`] implementation.
//!
//! Kernels (one entry point each):
//! - support passes (`support.wgsl`): `runs` groups a support into per-neuron runs; `mask`
//!   (`gates.wgsl`) evaluates its gates into a bit mask (`min(m, s) × n` bits), cached by
//!   (support, gates, minibatch) so a refinement evaluates the gates once per step; `apply`
//!   and `apply_fin` give `A_S v − y` with compensated sums; `grad` gives `A_Sᵀ r` (a workgroup
//!   per entry); `axpy`, `copy_slot`, `reduce` (fixed-order tree sums, no float atomics).
//!   With `GpuOptions::support_order = Feature`, `feat_count`, `feat_scan`, `feat_place` and
//!   `feat_sort` also list the support's entries per feature (sorted, so sums stay
//!   deterministic) and `apply_f` / `grad_f` replace `apply` / `grad`: a sample's feature is
//!   read once per pass instead of once per entry that uses it.
//! - refinement batch (`support.wgsl`, `refine.rs`, [`Backend::refine_exact`] and
//!   [`Backend::refine_armijo`]): up to `REFINE_MAX` refinement steps in one submission, read
//!   back once. Per exact step 8 dispatches: `grad`, `apply` + `apply_fin` of g, `refine_mu`
//!   (‖g‖², ‖A g‖² and μ on the device), `axpy` (μ from the scalar region), `apply` +
//!   `apply_fin` of the trial (residual into the other region), `refine_decide` (f(trial), the
//!   host's Armijo test, the step's record). An Armijo step after the first keeps μ
//!   (`FLAG_MU_KEEP`: `refine_mu` computes only ‖g‖²) and skips the apply of g: 6 dispatches.
//!   Backtracking after a rejection stays on the host (one trial per halving). Recorded as if every
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
//! - X (dense or materialised grid features) is stored feature-major for full-batch fits, so
//!   a warp of consecutive samples reads one segment per feature, and sample-major for
//!   minibatch fits ([`GpuOptions::feature_major`]).
//! - top-s (`topk.wgsl`): 3-digit radix select (`hist` with workgroup atomics, `select_digit`)
//!   of the tile merged with the running buffer, then an ordered compaction (`count`, `scan`,
//!   `scatter`) that keeps the result sorted and sends ties to the lower index.

mod buffers;
mod ceilings;
mod context;
pub mod interface;
pub mod jobs;
mod kernels;
mod options;
mod profile;
mod record;
mod refine;
mod support;
mod threshold;
mod timer;

pub use context::{
    list_adapters, AdapterReport, GpuContext, NO_ADAPTER_HELP, WORKGROUP_MEMORY_LIMIT,
};
pub use kernels::{
    compose_shader, BITS_ATOMIC_WGSL, BITS_SUBGROUP_WGSL, COMMON_WGSL, SHADER_FILES,
};
pub use options::{GpuOptions, ShaderChecks, SupportOrder};

use super::{
    Backend, BackendInfo, GateSource, MemoryMeter, MemoryStats, RefineStep, Slot, StepRule,
};
use crate::error::{Error, Result};
use crate::problem::{Features, GateMode, Problem};
use crate::samples::SampleSource;
use crate::sparse::SparseVec;
/// Buffer creation counted by a [`MemoryMeter`], shared with the self-contained modules.
pub(crate) use buffers::create as create_buffer;
use buffers::{Buffers, Layout, APPLY_THREADS, NSLOT, SLOT_GATE, SLOT_TOP_A};
use interface::{Op, FLAG_STORE, FLAG_SUB_Y, GATE_OPEN, GATE_RANDOM, GATE_WEIGHTS, WG_SIZE};
use kernels::{Kernels, K};
use record::{Read, Rec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The gates in force; weight gates live in the device's gate slot.
type Gates = super::ActiveGates<()>;

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
    /// Support id whose per-feature lists are built (`SupportOrder::Feature`).
    feat_sup: Option<u64>,
    last_gnorm: f64,
    meter: MemoryMeter,
    /// See [`GpuOptions::apply_threads`].
    apply_threads: usize,
    /// See [`GpuOptions::support_order`].
    support_order: SupportOrder,
    /// Submissions waited for to read results back (host round trips).
    round_trips: Arc<AtomicU64>,
}

impl GpuBackend {
    /// Host round trips so far: submissions the host waited for to read a result back. Each
    /// costs a submission's latency, which on a small minibatch can outweigh the kernels.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// The counter behind [`Self::round_trips`], to read while a driver holds the backend.
    pub fn round_trip_counter(&self) -> Arc<AtomicU64> {
        self.round_trips.clone()
    }

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
        // X is bound as a matrix when the features are given, or are a grid small enough to
        // materialise on the device; either way it is loaded from the problem a block of
        // samples at a time (`Buffers::new`), with no host copy of the whole matrix.
        let binding = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size)
            .min(opts.feature_binding_bytes.unwrap_or(u64::MAX));
        // Whole rows per binding, four bindings.
        let fits = (binding / (4 * d as u64)) * 4 >= n as u64;
        let x_bytes = (n * d * 4) as u64;
        let grid = match &problem.features {
            Features::Grid(g)
                if !(x_bytes <= opts.feature_cache_bytes.min(opts.device_budget / 2) && fits) =>
            {
                Some(g)
            }
            _ => None,
        };
        if let Some(n) = opts.fail_after_checks {
            ctx.fail_after(n);
        }
        let lay = Layout::new(&problem, s, grid, &opts, &ctx.limits)?;
        // Checked before any buffer exists: wgpu cannot say how much memory an adapter has,
        // so the budget is the caller's (`--max-memory`); the limits were checked above.
        let x_source: Option<&dyn SampleSource> = match grid {
            None => Some(problem.as_ref()),
            Some(_) => None,
        };
        let device_bytes =
            4 * (lay.f_floats + lay.u_words) as u64 + x_source.map_or(0, |_| x_bytes);
        if device_bytes > opts.device_budget {
            return Err(Error::DeviceLimit {
                what: "the fit's GPU buffers",
                needed: device_bytes,
                limit: opts.device_budget,
                fix: "fit fewer samples (--resize) or features, or raise --max-memory",
            });
        }
        let mut meter = MemoryMeter::default();
        let bufs = Buffers::new(&ctx, &problem, &lay, x_source, &mut meter)?;
        meter.set_tile(lay.tile_bytes);
        let kernels = Kernels::new(&ctx, &bufs, &opts)?;
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
            feat_sup: None,
            last_gnorm: 0.0,
            meter,
            apply_threads: opts
                .apply_threads
                .unwrap_or(if ctx_software { 1 } else { APPLY_THREADS })
                .clamp(1, APPLY_THREADS),
            support_order: opts.support_order,
            round_trips: Arc::default(),
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
            Gates::Weights(()) => GATE_WEIGHTS,
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

    /// A top-s selection of `s` entries fits the slots (`1..=cap`).
    fn check_top_s(&self, s: usize) -> Result<()> {
        if s == 0 || s > self.lay.cap {
            return Err(Error::arg(
                "--nonzeros",
                format!(
                    "threshold to s = {s}, but the backend holds 1..={}",
                    self.lay.cap
                ),
            ));
        }
        Ok(())
    }

    /// The jobs of [`Backend::forward`]: `r = A v − y` into the current residual, its
    /// `‖r‖²` into scalar 0.
    fn rec_forward(&mut self, v: Slot) -> Result<Rec> {
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
        Ok(rec)
    }

    /// The jobs of [`Backend::step_size`]: `g = A_Sᵀ r` on `v`'s support into slot `qg`, `‖g‖²`
    /// into scalar 0 and `‖A_S g‖²` into scalar 1.
    fn rec_step_size(&mut self, rec: &mut Rec, qv: u32, qg: u32) {
        self.ensure_mask(rec, qv, false);
        self.rec_grad(rec, qv, qg, 0);
        self.rec_apply(rec, qg, 0, 0, 1, false);
        self.sup[qg as usize] = self.sup[qv as usize];
    }

    fn res(&self, which: usize) -> u32 {
        self.lay.f_res[which] as u32
    }
}

impl Backend for GpuBackend {
    fn signal_len(&self) -> usize {
        self.lay.m * self.lay.d
    }

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
        let mut snapshot = None;
        self.gates = Gates::resolve(self.problem.gates, gates, |s| snapshot = Some(s));
        if let Some(s) = snapshot {
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
        }
        if !self.gates.is_weights() {
            self.gate_sup = None;
        }
        self.write_cfg();
        self.run(rec, &[])?;
        self.gate_epoch += 1;
        Ok(())
    }

    fn set_targets(&mut self, y: Option<&[f32]>) -> Result<()> {
        // A block of samples at a time, as at load.
        let (queue, f, lay) = (&self.ctx.queue, &self.bufs.f, &self.lay);
        let Some(y) = y else {
            return buffers::upload_targets(queue, f, lay, &self.problem);
        };
        super::check_targets(self.problem.n, y)?;
        for range in lay.read_blocks.iter() {
            buffers::write_targets(queue, f, lay, range.start, &y[range]);
        }
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
        let rec = self.rec_forward(v)?;
        Ok(self.run_scalars(rec, 1)?[0])
    }

    fn residual(&mut self, v: Slot) -> Result<()> {
        let rec = self.rec_forward(v)?;
        self.run(rec, &[]).map(drop)
    }

    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)> {
        let (qv, qg) = (self.slot(v)?, self.slot(g)?);
        let mut rec = Rec::default();
        self.rec_step_size(&mut rec, qv, qg);
        let s = self.run_scalars(rec, 2)?;
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
        f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        super::check_refine_slots(v, g, trial)?;
        let q = (self.slot(v)?, self.slot(g)?, self.slot(trial)?);
        Ok(self.refine_batches(q, Some(f_v), StepRule::Exact, steps)?.1)
    }

    fn refine_armijo(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        mu: Option<f32>,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        super::check_refine_slots(v, g, trial)?;
        let q = (self.slot(v)?, self.slot(g)?, self.slot(trial)?);
        Ok(self
            .refine_batches(q, Some(f_v), StepRule::Armijo(mu), steps)?
            .1)
    }

    fn refine_fresh(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        rule: StepRule,
        steps: usize,
    ) -> Result<(f64, Vec<RefineStep>)> {
        if steps == 0 {
            return Ok((self.forward(v)?, Vec::new()));
        }
        super::check_refine_slots(v, g, trial)?;
        let q = (self.slot(v)?, self.slot(g)?, self.slot(trial)?);
        self.refine_batches(q, None, rule, steps)
    }

    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()> {
        let (qw, qd) = (self.slot(w)?, self.slot(dst)?);
        self.check_top_s(s)?;
        self.run_threshold(Rec::default(), qw, Some(mu), s, qd)?;
        self.sup[qd as usize] = self.new_support();
        Ok(())
    }

    fn threshold_normalised(&mut self, w: Slot, g: Slot, s: usize, dst: Slot) -> Result<()> {
        let (qw, qg, qd) = (self.slot(w)?, self.slot(g)?, self.slot(dst)?);
        self.check_top_s(s)?;
        // step_size's jobs and μ into SC_MU, then the dense pass: one submission, no wait.
        let mut rec = Rec::default();
        self.rec_step_size(&mut rec, qw, qg);
        rec.push(K::StepMu, self.op(), [1, 1, 1]);
        self.run_threshold(rec, qw, None, s, qd)?;
        // ‖g‖² stays on the device; a trial that reuses this g must recompute it.
        self.last_gnorm = f64::NAN;
        self.sup[qd as usize] = self.new_support();
        Ok(())
    }

    fn momentum(&mut self, beta: f32, first: bool) -> Result<()> {
        let (w, prev) = (Slot::W.0 as u32, Slot::PREV.0 as u32);
        let mut rec = Rec::default();
        if !first {
            let op = self.op().axpy(w, prev, SLOT_TOP_A, beta);
            rec.push(
                K::Extrapolate,
                op,
                self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE)),
            );
        }
        self.rec_copy(&mut rec, prev, w);
        if !first {
            self.rec_copy(&mut rec, w, SLOT_TOP_A);
        }
        self.run(rec, &[])?;
        // The extrapolation keeps W's indices, so W keeps its support id.
        self.sup[prev as usize] = self.sup[w as usize];
        Ok(())
    }

    fn prune(&mut self, src: Slot, s: usize, dst: Slot) -> Result<()> {
        let (qs, qd) = (self.slot(src)?, self.slot(dst)?);
        if s == 0 {
            return self.load(dst, &SparseVec::new());
        }
        self.run_prune(qs, s.min(self.lay.cap), qd)?;
        self.sup[qd as usize] = self.new_support();
        Ok(())
    }

    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        let q = self.slot(v)?;
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, q, true);
        let out = self.res(2);
        self.rec_apply(&mut rec, q, FLAG_STORE, out, 2, true);
        // Read back a block of samples at a time: the staging buffer stays one block.
        let mut pred = Vec::with_capacity(self.lay.n);
        let mut rec = Some(rec);
        for range in self.lay.read_blocks.iter() {
            let read = Read {
                buffer: &self.bufs.f,
                offset: (out as usize + range.start) as u64 * 4,
                bytes: range.len() as u64 * 4,
            };
            let bytes = self.run(rec.take().unwrap_or_default(), &[read])?;
            pred.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
        }
        Ok(pred)
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}
