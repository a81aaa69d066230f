//! The CPU backend: multithreaded (rayon), cache-blocked, and the oracle the GPU is tested
//! against. Support passes accumulate in f64; the dense pass runs on f32 GEMM tiles
//! (matrixmultiply) over blocks of samples, so no `n×m` gate matrix or `m×d` gradient exists.

use super::{
    check_refine_slots, normalised_step, Backend, BackendInfo, GateSource, MemoryMeter,
    MemoryStats, RefineStep, Slot,
};
use crate::error::{Error, Result};
use crate::problem::{Features, GateMode, GridFourier, Problem};
use crate::rng;
use crate::sparse::{SparseVec, TopS};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

mod columns;
mod dense;
mod rows;
mod simd;

/// Samples per block in every pass (rows of the GEMM tiles).
const BLOCK: usize = 128;
/// Floats per dense-pass tile of the gradient (`tile·d`, 1 MiB): each tile's GEMMs pack the
/// block's features again, so fewer, larger tiles pack less (2 tiles instead of 5 at the
/// paper's `d = 1500, m = 200`: dense pass 5.2 → 4.3 ms on 2 cores).
const TILE_FLOATS: usize = 1 << 18;

/// The gates in force, weight gates as host data.
type Gates = super::ActiveGates<SparseVec>;

/// What a held per-sample vector was computed from: a slot's contents (a version number that
/// every write renews and a copy carries along) under the gates and samples in force then
/// (`env`, renewed by `set_gates` and `set_batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    version: u64,
    env: u64,
}

/// A neuron's entries in a support vector and, for weight gates, its entries in the gate vector.
struct Run {
    neuron: u32,
    entries: Range<usize>,
    gate: Range<usize>,
}

/// Everything a support pass needs that depends only on the support, built once per call so
/// the inner loops do no index arithmetic (`index % d` costs a division).
struct Plan {
    runs: Vec<Run>,
    /// Feature column of each entry of the vector.
    cols: Vec<u32>,
    /// Feature column of each entry of the gate vector (weight gates).
    gate_cols: Vec<u32>,
}

/// Bytes of one feature-major copy of `n` samples' `d` features, as the column path holds it
/// (columns padded to avoid cache-set conflicts): what the cache budget is compared with.
pub fn column_bytes(n: usize, d: usize) -> u64 {
    (columns::stride_for(n) * d * 4) as u64
}

/// Whether minibatch fits lay the features out per epoch (`Backend::arrange`): when two
/// feature-major copies fit `feature_cache` bytes; otherwise each batch is gathered.
pub fn epoch_layout_fits(n: usize, d: usize, feature_cache: u64) -> bool {
    2 * column_bytes(n, d) <= feature_cache
}

pub struct CpuBackend {
    problem: Arc<Problem>,
    /// Feature-major features for the column path (within the cache budget).
    cols: columns::Columns,
    /// The content version of the slot the weight gates were taken from (`None`: other
    /// gates): a forward pass of that same vector can build its own masks.
    gates_version: Option<u64>,
    /// Bytes the feature-major copies may take (`new`); an epoch's layout needs room for two.
    feature_cache: u64,
    /// Gate masks of the column path.
    masks: columns::Masks,
    /// The fit's nonzeros (bounds the mask cache).
    s: usize,
    /// The column path's per-thread dense-pass buffers, kept between calls.
    dense_scratch: Vec<Vec<f32>>,
    slots: Vec<SparseVec>,
    gates: Gates,
    batch: Option<Vec<u32>>,
    residual: Vec<f32>,
    trial_residual: Vec<f32>,
    /// `A_S p` of the last direction `p` a pass produced (`step_size`, `curvature`, `trial`,
    /// `refine_exact`).
    direction: Vec<f32>,
    /// Content versions of the slots, and the next version to hand out.
    versions: [u64; Slot::COUNT],
    next_version: u64,
    /// Renewed whenever the gates or the samples change.
    env: u64,
    /// What `residual`, `trial_residual` and `direction` belong to, where known: a trial
    /// along a held direction from the point whose residual is current costs no pass
    /// (`r − μ·A_S g`), so an Armijo backtrack is free and a conjugate-gradient step takes one
    /// pass fewer.
    residual_of: Option<Stamp>,
    trial_of: Option<Stamp>,
    direction_of: Option<Stamp>,
    last_gnorm: f64,
    /// Targets that replace the problem's (`Backend::set_targets`).
    targets: Option<Vec<f32>>,
    meter: MemoryMeter,
    threads: usize,
}

impl CpuBackend {
    /// Prepares a fit of `problem` with at most `s` nonzeros. The features are held
    /// feature-major (the column path of the support and dense passes) when they fit in
    /// `feature_cache` bytes; otherwise every pass reads or generates them row by row.
    pub fn new(problem: Arc<Problem>, s: usize, feature_cache: u64) -> Result<Self> {
        problem.validate()?;
        problem.check_nonzeros(s)?;
        let mut meter = MemoryMeter::default();
        let (n, d) = (problem.n, problem.d);
        let mut cols = columns::Columns::default();
        if column_bytes(n, d) <= feature_cache {
            let all = columns::from_source(problem.as_ref())?;
            meter.alloc((all.len() * 4) as u64);
            cols.all = Some(all);
        }
        let n = problem.n;
        meter.alloc((3 * n * 4) as u64 + (Slot::COUNT * s * 8) as u64);
        let gates = match problem.gates {
            GateMode::Gaussian => Gates::Open,
            _ => Gates::Random,
        };
        Ok(Self {
            cols,
            gates_version: None,
            feature_cache,
            masks: columns::Masks::default(),
            s,
            dense_scratch: Vec::new(),
            slots: vec![SparseVec::with_capacity(s); Slot::COUNT],
            gates,
            batch: None,
            residual: vec![0.0; n],
            trial_residual: vec![0.0; n],
            direction: vec![0.0; n],
            versions: [0; Slot::COUNT],
            next_version: 1,
            env: 0,
            residual_of: None,
            trial_of: None,
            direction_of: None,
            last_gnorm: 0.0,
            targets: None,
            meter,
            threads: rayon::current_num_threads(),
            problem,
        })
    }

    /// The targets in force: the problem's, or those of [`Backend::set_targets`].
    fn targets(&self) -> &[f32] {
        self.targets.as_deref().unwrap_or(&self.problem.y)
    }

    fn stamp(&self, slot: Slot) -> Stamp {
        Stamp {
            version: self.versions[slot.index()],
            env: self.env,
        }
    }

    /// Writes a slot and gives it a new content version.
    fn put(&mut self, slot: Slot, v: SparseVec) {
        self.slots[slot.index()] = v;
        self.touch(slot);
    }

    fn touch(&mut self, slot: Slot) {
        self.versions[slot.index()] = self.next_version;
        self.next_version += 1;
    }

    /// `direction = A_S p` (gates in force, no targets); returns `‖A_S p‖²`.
    fn apply_direction(&mut self, p: Slot) -> f64 {
        self.prepare(p);
        let mut u = std::mem::take(&mut self.direction);
        let curv = self.apply(&self.slots[p.index()], false, &mut u);
        self.direction = u;
        self.direction_of = Some(self.stamp(p));
        curv
    }

    /// Builds the gate masks the column path needs for the neurons of `slot`.
    fn prepare(&mut self, slot: Slot) {
        let d = self.problem.d;
        let neurons: Vec<u32> = self.slots[slot.index()]
            .neuron_runs(d)
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        self.ensure_masks(&neurons);
    }

    fn n_active(&self) -> usize {
        self.batch.as_ref().map_or(self.problem.n, |b| b.len())
    }

    #[inline]
    fn sample(batch: Option<&[u32]>, idx: usize) -> usize {
        batch.map_or(idx, |b| b[idx] as usize)
    }

    /// Each neuron's entries of `v` and of the weight gates, with their feature columns.
    fn plan(&self, v: &SparseVec) -> Plan {
        let d = self.problem.d;
        let runs = v
            .neuron_runs(d)
            .into_iter()
            .map(|(j, entries)| {
                let gate = match &self.gates {
                    Gates::Weights(h) => neuron_range(h, j, d),
                    _ => 0..0,
                };
                Run {
                    neuron: j,
                    entries,
                    gate,
                }
            })
            .collect();
        let gate_cols = match &self.gates {
            Gates::Weights(h) => h.indices.iter().map(|&i| i % d as u32).collect(),
            _ => Vec::new(),
        };
        Plan {
            runs,
            cols: v.indices.iter().map(|&i| i % d as u32).collect(),
            gate_cols,
        }
    }

    /// `out_i = (A v)_i − y_i` (or without `y`) over the active samples; returns `Σ out²`.
    /// The column path needs [`Self::prepare`] for `v`'s neurons first.
    fn apply(&self, v: &SparseVec, subtract_y: bool, out: &mut [f32]) -> f64 {
        if self.columns().is_some() {
            return self.apply_cols(v, subtract_y, out);
        }
        self.apply_rows(v, subtract_y, out)
    }

    /// `g = A_Sᵀ r` on the support of `v` (values of `v` unused); returns `g`.
    fn apply_t(&self, v: &SparseVec, r: &[f32]) -> Vec<f32> {
        if self.columns().is_some() {
            return self.apply_t_cols(v, r);
        }
        self.apply_t_rows(v, r)
    }

    /// [`Self::apply_t`] before rounding to f32.
    fn apply_t64(&self, v: &SparseVec, r: &[f32]) -> Vec<f64> {
        if self.columns().is_some() {
            return self.apply_t_cols64(v, r);
        }
        self.apply_t_rows64(v, r)
    }

    /// `u = A_S g` (active samples, gates in force) and `A_Sᵀ u` in one pass over the
    /// features; returns `(A_Sᵀ u, ‖u‖²)`. The column path needs [`Self::prepare`] first.
    fn normal(&self, g: &SparseVec, u: &mut [f32]) -> (Vec<f64>, f64) {
        if self.columns().is_some() {
            return self.normal_cols(g, u);
        }
        self.normal_rows(g, u)
    }

    /// `g = A_Sᵀ r` on the support of `v` (current residual) into slot `g`; returns `‖g‖²`.
    fn gradient(&mut self, v: Slot, g: Slot) -> f64 {
        self.prepare(v);
        let vv = &self.slots[v.index()];
        let gvec = SparseVec {
            indices: vv.indices.clone(),
            values: self.apply_t(vv, &self.residual),
        };
        self.last_gnorm = gvec.norm2();
        self.put(g, gvec);
        self.last_gnorm
    }

    /// The tile buffers of the dense pass, in bytes (per-thread partials, block scratch, gates).
    pub fn tile_bytes(&self) -> u64 {
        tile_bytes(self.problem.d, self.tile_neurons(), self.threads)
    }

    /// Upper bound on the working memory of a fit, in bytes, excluding the problem's own data
    /// (features, targets). Nothing here grows with `m·d`, `n·m` or `n·d`:
    /// `16n` (the residual, the trial residual, `A_S g` and targets that replace the
    /// problem's) + `(256 + 128·threads)·s` (slots, gates, top-s buffer, per-thread gradient
    /// partials and gate blocks) + the tile buffers
    /// `4·(threads+2)·(2·T·d + 128·d + 128·T + 262144)` with `T = min(m, 262144/d)` neurons per
    /// tile + only when the features fit `feature_cache` bytes: `8·(n + 32)·d` (all columns, and
    /// a minibatch's or an epoch's layout of them, each column padded by under 32 floats) and
    /// the gate masks `(2s + 64)·8·⌈n/64⌉` + 1 MiB.
    pub fn working_memory_bound(
        problem: &Problem,
        s: usize,
        threads: usize,
        feature_cache: u64,
    ) -> u64 {
        let (n, d) = (problem.n as u64, problem.d as u64);
        let t = (TILE_FLOATS / problem.d).clamp(1, problem.m);
        let cache = if column_bytes(problem.n, problem.d) <= feature_cache {
            8 * (n + 32) * d + (2 * s as u64 + 64) * 8 * n.div_ceil(64)
        } else {
            0
        };
        16 * n
            + (256 + 128 * threads as u64) * s as u64
            + tile_bytes(problem.d, t, threads)
            + cache
            + (1 << 20)
    }
}

/// `out = r − μ u` (in f64, stored f32); returns `Σ out²` in sample order.
fn residual_update(r: &[f32], u: &[f32], mu: f32, out: &mut [f32]) -> f64 {
    let mu = mu as f64;
    let mut acc = 0f64;
    for ((o, &a), &b) in out.iter_mut().zip(r).zip(u) {
        let v = a as f64 - mu * b as f64;
        *o = v as f32;
        acc += v * v;
    }
    acc
}

fn tile_bytes(d: usize, t: usize, threads: usize) -> u64 {
    (4 * (threads + 2) * (2 * t * d + BLOCK * d + BLOCK * t + TILE_FLOATS)) as u64
}

/// Samples per granule of a partition: a whole word of the gate masks.
const GRANULE: usize = 64;

/// Splits `0..len` into at most `threads` contiguous parts of whole granules, as equal as
/// granules allow (784 samples on 2 threads: 448 + 336, where 128-sample blocks gave 512 +
/// 272). A fixed partition keeps the number of partial buffers at `threads` and the
/// summation order the same on every run with as many threads, so fits are deterministic for
/// a thread count (another count sums the partials differently: a fit that differs by
/// rounding).
fn parts(len: usize, threads: usize) -> Vec<Range<usize>> {
    let granules = len.div_ceil(GRANULE);
    let k = threads.max(1).min(granules.max(1));
    let (per, extra) = (granules / k, granules % k);
    let mut out = Vec::with_capacity(k);
    let mut g = 0;
    for i in 0..k {
        let take = per + usize::from(i < extra);
        let (lo, hi) = (g * GRANULE, ((g + take) * GRANULE).min(len));
        if lo < hi {
            out.push(lo..hi);
        }
        g += take;
    }
    out
}

/// `out` cut into the consecutive pieces `ranges` (which tile a prefix of it), one per worker.
fn split_by<'a>(out: &'a mut [f32], ranges: &[Range<usize>]) -> Vec<&'a mut [f32]> {
    let mut chunks = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for r in ranges {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(r.len());
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// Sums partial vectors in order.
fn sum_in_order<T: Copy + std::ops::AddAssign + Default>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut it = parts.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![T::default(); len]);
    for p in it {
        acc.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
    }
    acc
}

/// Entries of neuron `j` in a sorted sparse vector.
fn neuron_range(v: &SparseVec, j: u32, d: usize) -> Range<usize> {
    let lo = j as usize * d;
    let hi = lo + d;
    let a = v.indices.partition_point(|&i| (i as usize) < lo);
    let b = v.indices.partition_point(|&i| (i as usize) < hi);
    a..b
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent lanes so the compiler vectorises the reduction.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for k in chunks * 8..a.len() {
        s += a[k] * b[k];
    }
    s
}

impl Backend for CpuBackend {
    fn signal_len(&self) -> usize {
        self.problem.signal_len()
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "cpu",
            adapter: format!("CPU ({} threads)", self.threads),
        }
    }

    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()> {
        if let Some(&last) = w.indices.last() {
            if last as usize >= self.problem.signal_len() {
                return Err(Error::invalid(
                    crate::error::Param::Model,
                    "index beyond m·d",
                ));
            }
        }
        crate::error::check_finite("weights", &w.values)?;
        self.put(slot, w.clone());
        Ok(())
    }

    fn read(&mut self, slot: Slot) -> Result<SparseVec> {
        Ok(self.slots[slot.index()].clone())
    }

    fn momentum(&mut self, beta: f32, first: bool) -> Result<()> {
        if first {
            return self.copy(Slot::PREV, Slot::W);
        }
        let y = self.slots[Slot::W.index()].extrapolate(&self.slots[Slot::PREV.index()], beta);
        crate::error::check_finite("weights", &y.values)?;
        // The old W moves into PREV (no copy), the extrapolation into W.
        let w = std::mem::replace(&mut self.slots[Slot::W.index()], y);
        self.touch(Slot::W);
        self.put(Slot::PREV, w);
        Ok(())
    }

    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()> {
        if dst != src {
            let v = self.slots[src.index()].clone();
            self.slots[dst.index()] = v;
            // The same contents: what was computed from `src` holds for `dst`.
            self.versions[dst.index()] = self.versions[src.index()];
        }
        Ok(())
    }

    fn set_gates(&mut self, gates: GateSource) -> Result<()> {
        let new = Gates::resolve(self.problem.gates, gates, |s| self.slots[s.index()].clone());
        self.gates_version = match (gates, &new) {
            (GateSource::Slot(s), Gates::Weights(_)) => Some(self.versions[s.index()]),
            _ => None,
        };
        // Random gates are a function of the seed alone: their masks stay valid.
        if !(matches!(self.gates, Gates::Random) && matches!(new, Gates::Random)) {
            self.masks.clear(&mut self.meter);
        }
        self.gates = new;
        self.env += 1;
        Ok(())
    }

    fn set_targets(&mut self, y: Option<&[f32]>) -> Result<()> {
        if let Some(y) = y {
            super::check_targets(self.problem.n, y)?;
        }
        if let Some(old) = self.targets.take() {
            self.meter.free((old.len() * 4) as u64);
        }
        if let Some(y) = y {
            self.meter.alloc((y.len() * 4) as u64);
            self.targets = Some(y.to_vec());
        }
        // Residuals depend on the targets; `A_S p` (the direction) does not.
        self.residual_of = None;
        self.trial_of = None;
        Ok(())
    }

    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()> {
        if let Some(b) = batch {
            if b.is_empty() || b.iter().any(|&i| i as usize >= self.problem.n) {
                return Err(Error::invalid(
                    crate::error::Param::BatchSize,
                    "empty batch or sample out of range",
                ));
            }
        }
        if batch.is_none() && self.batch.is_none() {
            // Already all samples: the masks and columns stay valid.
            return Ok(());
        }
        self.env += 1;
        self.batch = batch.map(|b| b.to_vec());
        self.masks.clear(&mut self.meter);
        // Where the batch lies in the epoch's layout, if it is one contiguous range of it
        // (the batch after the previous one, as a training loop visits them, is tried first).
        self.cols.batch_at = match (&self.cols.arranged, &self.batch) {
            (Some(a), Some(ids)) => a.find(ids, self.cols.next_at),
            _ => None,
        };
        let mut x = self.cols.batch.take().unwrap_or_default();
        self.meter.free((x.len() * 4) as u64);
        match (&self.cols.all, &self.batch, self.cols.batch_at) {
            (_, Some(ids), Some(lo)) => self.cols.next_at = lo + ids.len(),
            (Some(all), Some(ids), None) => {
                // Not in the layout: the minibatch's own columns, gathered once for all of
                // its passes. The layout goes, so that at most one d × n copy exists besides
                // `all` (`working_memory_bound`).
                if let Some(a) = self.cols.arranged.take() {
                    self.meter.free((a.xt.len() * 4) as u64);
                }
                let (n, d) = (self.problem.n, self.problem.d);
                columns::gather_into(all, n, d, ids, &mut x);
                self.meter.alloc((x.len() * 4) as u64);
                self.cols.batch = Some(x);
            }
            _ => {}
        }
        let n = self.n_active();
        self.residual.resize(n, 0.0);
        self.trial_residual.resize(n, 0.0);
        self.direction.resize(n, 0.0);
        Ok(())
    }

    fn arrange(&mut self, order: &[u32]) -> Result<()> {
        let (n, d) = (self.problem.n, self.problem.d);
        let Some(all) = &self.cols.all else {
            return Ok(()); // the row path gathers nothing
        };
        // Not a whole epoch, or no room for a second copy of the features within the cache
        // budget: batches are gathered one by one.
        if order.len() != n || !epoch_layout_fits(n, d, self.feature_cache) {
            return Ok(());
        }
        // A batch still set is set again below, in the new layout.
        let current = self.batch.take();
        self.cols.batch_at = None;
        if let Some(x) = self.cols.batch.take() {
            self.meter.free((x.len() * 4) as u64);
        }
        let mut a = self.cols.arranged.take().unwrap_or(columns::Arranged {
            order: Vec::new(),
            xt: Vec::new(),
        });
        self.meter.free((a.xt.len() * 4) as u64);
        a.order.clear();
        a.order.extend_from_slice(order);
        columns::gather_into(all, n, d, order, &mut a.xt);
        self.meter.alloc((a.xt.len() * 4) as u64);
        self.cols.arranged = Some(a);
        self.cols.next_at = 0;
        if let Some(ids) = current {
            self.set_batch(Some(&ids))?;
        }
        Ok(())
    }

    fn forward(&mut self, v: Slot) -> Result<f64> {
        let mut r = std::mem::take(&mut self.residual);
        let loss = if self.gated_by(v) && self.masks.by_neuron.is_empty() {
            // The sequential ReLU network's first pass on new samples or gates: the masks
            // come out of the same pre-activations (one pass instead of two).
            self.forward_building_masks(v, &mut r)
        } else {
            self.prepare(v);
            self.apply(&self.slots[v.index()], true, &mut r)
        };
        self.residual = r;
        self.residual_of = Some(self.stamp(v));
        Ok(loss)
    }

    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)> {
        let gnorm = self.gradient(v, g);
        let curv = self.apply_direction(g);
        Ok((gnorm, curv))
    }

    fn trial(
        &mut self,
        v: Slot,
        g: Slot,
        dst: Slot,
        mu: f32,
        recompute_grad: bool,
    ) -> Result<(f64, f64)> {
        if recompute_grad {
            self.gradient(v, g);
        }
        let out = self.slots[v.index()]
            .plus_scaled(&self.slots[g.index()], -mu)
            .ok_or_else(|| {
                Error::invalid(crate::error::Param::Slot, "trial needs g on v's support")
            })?;
        let loss = if self.residual_of == Some(self.stamp(v)) {
            // `A(v − μg) − y = r − μ·A_S g`: one pass for a new direction, none for a
            // backtrack along a held one.
            if self.direction_of != Some(self.stamp(g)) {
                self.apply_direction(g);
            }
            residual_update(
                &self.residual,
                &self.direction,
                mu,
                &mut self.trial_residual,
            )
        } else {
            self.prepare(v);
            let mut r = std::mem::take(&mut self.trial_residual);
            let loss = self.apply(&out, true, &mut r);
            self.trial_residual = r;
            loss
        };
        self.put(dst, out);
        self.trial_of = Some(self.stamp(dst));
        Ok((self.last_gnorm, loss))
    }

    fn accept_trial(&mut self) -> Result<()> {
        std::mem::swap(&mut self.residual, &mut self.trial_residual);
        std::mem::swap(&mut self.residual_of, &mut self.trial_of);
        Ok(())
    }

    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        Ok(CpuBackend::gradient(self, v, g))
    }

    fn curvature(&mut self, p: Slot) -> Result<f64> {
        Ok(self.apply_direction(p))
    }

    /// One pass over the features per step instead of three. The trial
    /// residual is `r − μ A_S g` and the next gradient `g − μ A_Sᵀ A_S g` (kept in f64): equal to
    /// `A(v − μg) − y` and `A_Sᵀ r'` in exact arithmetic, and both halves come from one fused
    /// pass (`CpuBackend::normal`). The records follow the trait's rules; their losses carry
    /// the f32 rounding of the tracked residual, which every `forward` resets.
    fn refine_exact(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        mut f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        check_refine_slots(v, g, trial)?;
        let mut out = Vec::with_capacity(steps);
        if steps == 0 {
            return Ok(out);
        }
        self.prepare(v);
        let mut grad = self.apply_t64(&self.slots[v.index()], &self.residual);
        // The gradient slot's vector, rewritten in place each step: `v`'s support never changes.
        let mut gvec = SparseVec {
            indices: self.slots[v.index()].indices.clone(),
            values: vec![0.0; grad.len()],
        };
        for _ in 0..steps {
            gvec.values
                .iter_mut()
                .zip(&grad)
                .for_each(|(o, &x)| *o = x as f32);
            let gn = gvec.norm2();
            let mut u = std::mem::take(&mut self.direction);
            let (h, curv) = self.normal(&gvec, &mut u);
            self.direction = u;
            let mu = normalised_step(gn, curv);
            // trial = v − μ g, in the trial slot's own buffers.
            let mut t = std::mem::take(&mut self.slots[trial.index()]);
            t.indices.clone_from(&gvec.indices);
            t.values.clear();
            let vv = &self.slots[v.index()].values;
            t.values
                .extend(vv.iter().zip(&gvec.values).map(|(&x, &y)| x + -mu * y));
            self.slots[trial.index()] = t;
            let f_t = residual_update(
                &self.residual,
                &self.direction,
                mu,
                &mut self.trial_residual,
            );
            let rec = RefineStep::judged(gn, curv, mu, f_t, f_v);
            out.push(rec);
            if !rec.accepted {
                break;
            }
            // The trial becomes the iterate (the old one stays in `trial`, as on the GPU).
            std::mem::swap(&mut self.residual, &mut self.trial_residual);
            self.slots.swap(v.index(), trial.index());
            f_v = f_t;
            let mu = mu as f64;
            grad.iter_mut().zip(&h).for_each(|(a, &b)| *a -= mu * b);
        }
        self.last_gnorm = out.last().map_or(self.last_gnorm, |r| r.gn);
        self.put(g, gvec);
        // `v` and `trial` were rewritten in place: new versions for both.
        self.touch(v);
        self.touch(trial);
        // The residual left current is `v`'s (tracked); `direction` is a spent step's.
        self.residual_of = Some(self.stamp(v));
        self.trial_of = None;
        self.direction_of = None;
        Ok(out)
    }

    fn combine(&mut self, dst: Slot, a: Slot, b: Slot, beta: f32) -> Result<()> {
        let out = self.slots[a.index()]
            .plus_scaled(&self.slots[b.index()], beta)
            .ok_or_else(|| {
                Error::invalid(
                    crate::error::Param::Slot,
                    "combine needs two vectors with the same support",
                )
            })?;
        self.put(dst, out);
        Ok(())
    }

    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()> {
        let d = self.problem.d;
        let neurons = self.candidate_neurons();
        if matches!(self.gates, Gates::Weights(_)) {
            self.ensure_masks(&neurons);
        }
        let t_len = self.tile_neurons();
        let tile_bytes = self.tile_bytes();
        self.meter
            .alloc(tile_bytes + TopS::capacity_bytes(s) as u64);
        self.meter.set_tile(tile_bytes);
        let mut scratch = std::mem::take(&mut self.dense_scratch);
        let wv = &self.slots[w.index()];
        let mut top = TopS::new(s);
        for tile in neurons.chunks(t_len) {
            let mut owned;
            let g: &mut [f32] = match self.columns() {
                Some(cols) => self.tile_gradient_cols(tile, &self.residual, cols, &mut scratch),
                None => {
                    owned = self.tile_gradient(tile, &self.residual);
                    &mut owned
                }
            };
            for (t, &j) in tile.iter().enumerate() {
                // c_j = w_j − μ G_j, in place in the tile's gradient.
                let c = &mut g[t * d..(t + 1) * d];
                c.iter_mut().for_each(|x| *x *= -mu);
                for p in neuron_range(wv, j, d) {
                    c[wv.indices[p] as usize % d] += wv.values[p];
                }
                let base = j * d as u32;
                top.extend(c.iter().enumerate().map(|(k, &v)| (base + k as u32, v)));
            }
        }
        // Neurons whose gates are closed everywhere have no gradient: c_j = w_j.
        let mut active = neurons.iter().peekable();
        for (j, r) in wv.neuron_runs(d) {
            while active.peek().is_some_and(|&&a| a < j) {
                active.next();
            }
            if active.peek() != Some(&&j) {
                top.extend(r.map(|p| (wv.indices[p], wv.values[p])));
            }
        }
        self.put(dst, top.finish());
        self.dense_scratch = scratch;
        self.meter.free(tile_bytes + TopS::capacity_bytes(s) as u64);
        Ok(())
    }

    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.problem.n];
        // Every sample, whatever the current minibatch.
        let batch = self.batch.take();
        if batch.is_some() {
            self.set_batch(None)?;
        }
        self.prepare(v);
        self.apply(&self.slots[v.index()], false, &mut out);
        if let Some(b) = batch {
            self.set_batch(Some(&b))?;
        }
        Ok(out)
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}
