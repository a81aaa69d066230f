//! The fast path of the CPU support passes: features held feature-major (column `k` is feature
//! `k` of every active sample, contiguous), so a support entry's contribution to a block of
//! samples is one SIMD-friendly loop over contiguous memory; and the gates of each neuron kept
//! as a bit mask over the active samples (`n` bits per neuron with entries, as the GPU keeps
//! them), built once per gate snapshot and minibatch instead of once per pass (with
//! sequential gates, by the first forward pass itself). Minibatches read an epoch's layout of
//! the columns (`Backend::arrange`) in place, each batch a contiguous range of every column.
//!
//! Used when the features fit the cache budget (`CpuBackend::new`'s `feature_cache`); the
//! row path in `rows.rs` (features generated or read row by row, gates evaluated per pass)
//! serves the rest and is tested against the same oracle.

use super::simd;
use super::*;
use crate::samples::{self, SampleBlocks, SampleSource};
use std::collections::HashMap;

/// Samples per block of a support pass: the per-block accumulators stay in L1.
const CB: usize = 256;
// Samples whose pre-activations are summed together in registers (one register set of the
// AVX2 copy; the plain copy sums as many at a time).
use simd::LANES;

/// Feature-major copies of the features: `all` (d × n); during a minibatch either `batch`
/// (d × batch length, gathered once per `set_batch`) or a contiguous range of `arranged`.
#[derive(Default)]
pub(super) struct Columns {
    pub all: Option<Vec<f32>>,
    pub batch: Option<Vec<f32>>,
    /// The epoch's layout (`Backend::arrange`): `all`'s columns in the order of its shuffle,
    /// so each of its minibatches is a contiguous range of every column. Gathering a batch
    /// from `all` instead reads a cache line of every column per sample, which at 128²
    /// streams the whole feature matrix once per batch (18% of a fit's time).
    pub arranged: Option<Arranged>,
    /// Where the current minibatch starts in `arranged` (`None`: it is `batch`).
    pub batch_at: Option<usize>,
    /// Where the previous minibatch in `arranged` ended: the next one usually starts there.
    pub next_at: usize,
}

pub(super) struct Arranged {
    pub order: Vec<u32>,
    pub xt: Vec<f32>,
}

impl Arranged {
    /// Where `ids` lies in `order` as one contiguous range, if it does; `hint` is tried first
    /// (the end of the previous batch), then the position of `ids[0]`.
    pub fn find(&self, ids: &[u32], hint: usize) -> Option<usize> {
        let at = |lo: usize| self.order.get(lo..lo + ids.len()) == Some(ids);
        if at(hint) {
            return Some(hint);
        }
        let first = *ids.first()?;
        let lo = self.order.iter().position(|&i| i == first)?;
        at(lo).then_some(lo)
    }
}

/// The active samples' feature columns: column `k` holds samples `0..len` at
/// `xt[k·stride..k·stride + len]`.
#[derive(Clone, Copy)]
pub(super) struct Cols<'a> {
    pub xt: &'a [f32],
    pub stride: usize,
    pub len: usize,
}

impl<'a> Cols<'a> {
    /// Samples `lo..lo + bl` of feature column `k`.
    #[inline(always)]
    pub fn col(&self, k: usize, lo: usize, bl: usize) -> &'a [f32] {
        let at = k * self.stride + lo;
        &self.xt[at..at + bl]
    }
}

/// Gate bit masks over the active samples, per neuron; cleared whenever the gates or the
/// batch change. Bit `i` of neuron `j` is 1 when `h_j · x_i > 0` (every gate open: no masks).
#[derive(Default)]
pub(super) struct Masks {
    pub by_neuron: HashMap<u32, Vec<u64>>,
    /// Bytes held, for the memory meter.
    pub bytes: u64,
}

impl Masks {
    pub fn clear(&mut self, meter: &mut MemoryMeter) {
        self.by_neuron.clear();
        meter.free(self.bytes);
        self.bytes = 0;
    }
}

/// Packs `z > 0` into bits, 64 samples per word (`out.len() = ⌈z.len()/64⌉`).
#[inline(always)]
fn positive_bits(z: &[f64], out: &mut [u64]) {
    for (zc, word) in z.chunks(64).zip(out) {
        *word = 0;
        for (t, &v) in zc.iter().enumerate() {
            *word |= u64::from(v > 0.0) << t;
        }
    }
}

/// Writes the gate bits of positions `lo..lo + out.len()` as 0.0 / 1.0 (`lo` a multiple of
/// 64). Branch-free: gates are open about half the time, so a branch per sample mispredicts.
#[inline(always)]
fn expand<T: From<u8>>(mask: &[u64], lo: usize, out: &mut [T]) {
    debug_assert_eq!(lo % 64, 0);
    for (c, chunk) in out.chunks_mut(64).enumerate() {
        let w = mask[lo / 64 + c];
        for (t, o) in chunk.iter_mut().enumerate() {
            *o = T::from(((w >> t) & 1) as u8);
        }
    }
}

/// The distance between consecutive columns of `len` samples: `len` rounded up to whole
/// cache lines, and to an odd number of them. A pass reads the same block of samples from
/// many columns at once; with a power-of-two stride (a 128² image, a 4096-sample batch) those
/// segments all fall into the same cache sets and evict each other, which measured slower
/// than gathering a fresh copy per batch.
pub(super) fn stride_for(len: usize) -> usize {
    let lines = len.div_ceil(16);
    16 * (lines | 1)
}

/// `len` zeros for feature-major columns. On Linux the kernel is asked to back them with huge
/// pages: a support pass reads a segment from each of hundreds of columns, every one on its
/// own 4 KiB page, more pages than the TLB holds. (A hint: contents and results are the same.)
pub(super) fn column_storage(len: usize) -> Vec<f32> {
    let xt = vec![0f32; len];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = xt.as_ptr() as usize;
        let (lo, hi) = (
            start.next_multiple_of(HUGE),
            (start + 4 * len) / HUGE * HUGE,
        );
        if hi > lo {
            // SAFETY: advice on whole pages inside this allocation; it changes no contents.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    xt
}

/// All features of `src`, feature-major (d columns of n samples, [`stride_for`] apart), read
/// a block of samples at a time.
pub(super) fn from_source(src: &dyn SampleSource) -> Result<Vec<f32>> {
    let (n, d) = (src.samples(), src.features());
    let stride = stride_for(n);
    let mut xt = column_storage(d * stride);
    let blocks = SampleBlocks::within(n, d, samples::BLOCK_BYTES, CB);
    samples::for_each_rows(src, blocks, |range, rows| {
        samples::scatter_columns(&mut xt, stride, 0, range, rows, d);
        Ok(())
    })?;
    Ok(xt)
}

/// The columns (d of `ids.len()` samples, [`stride_for`] apart) of the samples `ids`,
/// gathered from the feature-major `all` (d × n, columns `stride_for(n)` apart): a
/// minibatch's own copy, or an epoch's layout. Each output column reads one input column at
/// the batch's positions and is written in order (going through rows instead scattered every
/// store). Reuses `xt`'s allocation.
pub(super) fn gather_into(all: &[f32], n: usize, d: usize, ids: &[u32], xt: &mut Vec<f32>) {
    let len = ids.len();
    let stride = stride_for(len);
    if xt.len() != d * stride {
        *xt = column_storage(d * stride);
    }
    if len == 0 {
        return;
    }
    xt.par_chunks_mut(stride)
        .zip(all.par_chunks(stride_for(n)))
        .with_min_len(16)
        .for_each(|(out, col)| {
            for (o, &i) in out.iter_mut().zip(ids) {
                *o = col[i as usize];
            }
        });
}

impl CpuBackend {
    /// The active samples' columns, if held.
    pub(super) fn columns(&self) -> Option<Cols<'_>> {
        let len = self.n_active();
        let n = self.problem.n;
        let (xt, stride) = match (&self.batch, self.cols.batch_at, &self.cols.arranged) {
            (Some(_), Some(lo), Some(a)) => (&a.xt[lo..], stride_for(n)),
            (Some(_), _, _) => (self.cols.batch.as_deref()?, stride_for(len)),
            (None, _, _) => (self.cols.all.as_deref()?, stride_for(n)),
        };
        Some(Cols { xt, stride, len })
    }

    /// Makes sure the gate masks of `neurons` exist (no-op on the row path or with every gate
    /// open). Masks are computed in parallel over neurons, each sum in a fixed order.
    pub(super) fn ensure_masks(&mut self, neurons: &[u32]) {
        if matches!(self.gates, Gates::Open) || self.columns().is_none() {
            return;
        }
        let missing: Vec<u32> = neurons
            .iter()
            .copied()
            .filter(|j| !self.masks.by_neuron.contains_key(j))
            .collect();
        if missing.is_empty() {
            return;
        }
        // Bounded at about 2·s neurons: random gates never change in a convex fit, so the
        // cache would otherwise grow towards n·m bits.
        let cap = 2 * self.s + 64;
        if !self.masks.by_neuron.is_empty() && self.masks.by_neuron.len() + missing.len() > cap {
            self.masks.clear(&mut self.meter);
            return self.ensure_masks(neurons);
        }
        let cols = self.columns().expect("checked above");
        let d = self.problem.d;
        let words = cols.len.div_ceil(64);
        let seed = self.problem.gate_seed;
        let gates = &self.gates;
        let built: Vec<(u32, Vec<u64>)> = missing
            .par_iter()
            .map(|&j| {
                // The gate as (column, weight) pairs.
                let pairs: Vec<(usize, f64)> = match gates {
                    Gates::Weights(h) => neuron_range(h, j, d)
                        .map(|p| ((h.indices[p] as usize) % d, h.values[p] as f64))
                        .collect(),
                    _ => {
                        let mut g = vec![0f32; d];
                        rng::gate_vector(seed, j, &mut g);
                        g.into_iter().map(|v| v as f64).enumerate().collect()
                    }
                };
                let mask = simd::wide(GateMask {
                    pairs: &pairs,
                    cols,
                });
                (j, mask)
            })
            .collect();
        let bytes = (built.len() * words * 8) as u64;
        self.meter.alloc(bytes);
        self.masks.bytes += bytes;
        self.masks.by_neuron.extend(built);
    }

    /// The gate mask of neuron `j` (`None`: every gate open). [`Self::ensure_masks`] first.
    fn mask(&self, j: u32) -> Option<&[u64]> {
        match self.gates {
            Gates::Open => None,
            _ => Some(&self.masks.by_neuron[&j]),
        }
    }

    /// [`CpuBackend::apply`] on columns: per block of samples, each run's pre-activations
    /// `z = X_blk v_j` accumulated entry by entry over contiguous columns, added where the
    /// neuron's gate is open.
    pub(super) fn apply_cols(&self, v: &SparseVec, subtract_y: bool, out: &mut [f32]) -> f64 {
        self.apply_blocks(v, subtract_y, out, false).0
    }

    /// [`Self::apply_cols`]; with `build`, the gates are `v` itself and each block also returns
    /// the gate bits of its own pre-activations ([`Pass::forward_block`]). Returns the loss,
    /// the blocks and their bits.
    fn apply_blocks(
        &self,
        v: &SparseVec,
        subtract_y: bool,
        out: &mut [f32],
        build: bool,
    ) -> (f64, Vec<Range<usize>>, Vec<Vec<u64>>) {
        let cols = self.columns().expect("column path");
        let len = cols.len;
        let plan = self.plan(v);
        let masks: Vec<Option<&[u64]>> = match build {
            true => Vec::new(),
            false => plan.runs.iter().map(|r| self.mask(r.neuron)).collect(),
        };
        let batch = self.batch.as_deref();
        let y = subtract_y.then_some(self.targets());
        let blocks = pass_blocks(len, self.threads);
        let chunks = split_by(out, &blocks);
        let pass = Pass {
            plan: &plan,
            masks: &masks,
            cols,
        };
        let (sums, bits): (Vec<f64>, Vec<Vec<u64>>) = chunks
            .into_par_iter()
            .zip(blocks.clone())
            .with_min_len(blocks_per_thread(len, self.threads))
            .map(|(chunk, range)| {
                simd::wide(ApplyBlock {
                    pass,
                    v: &v.values,
                    lo: range.start,
                    chunk,
                    y,
                    batch,
                    build,
                })
            })
            .unzip();
        // In block order: the same rounding on every run.
        (sums.iter().sum(), blocks, bits)
    }

    /// Whether the gates in force are the weights of slot `v` as it holds them now, on the
    /// column path.
    pub(super) fn gated_by(&self, v: Slot) -> bool {
        self.gates_version == Some(self.versions[v.index()])
            && matches!(self.gates, Gates::Weights(_))
            && self.columns().is_some()
    }

    /// `forward(v)` when the gates are `v` itself ([`Self::gated_by`]) and no masks are held:
    /// each neuron's gate is open where its own pre-activation is positive, so the pass that
    /// computes `z = X v_j` also writes the masks ([`Self::ensure_masks`] would compute the
    /// same `z` in the same order in a pass of its own). Into `out`: `A v − y`; returns its
    /// `‖·‖²`.
    pub(super) fn forward_building_masks(&mut self, v: Slot, out: &mut [f32]) -> f64 {
        let vv = &self.slots[v.index()];
        let (loss, blocks, bits) = self.apply_blocks(vv, true, out, true);
        let words = self.n_active().div_ceil(64);
        let mut built: Vec<(u32, Vec<u64>)> = vv
            .neuron_runs(self.problem.d)
            .into_iter()
            .map(|(j, _)| (j, vec![0u64; words]))
            .collect();
        for (range, w) in blocks.iter().zip(&bits) {
            let (first, nw) = (range.start / 64, range.len().div_ceil(64));
            for (r, (_, mask)) in built.iter_mut().enumerate() {
                mask[first..first + nw].copy_from_slice(&w[r * nw..(r + 1) * nw]);
            }
        }
        let bytes = (built.len() * words * 8) as u64;
        self.meter.alloc(bytes);
        self.masks.bytes += bytes;
        self.masks.by_neuron.extend(built);
        loss
    }

    /// [`CpuBackend::apply_t`] on columns: per block, each run's masked residual, then one
    /// contiguous dot product per support entry.
    pub(super) fn apply_t_cols(&self, v: &SparseVec, r: &[f32]) -> Vec<f32> {
        let g = self.apply_t_cols64(v, r);
        g.into_iter().map(|x| x as f32).collect()
    }

    /// [`Self::apply_t_cols`] before rounding to f32.
    pub(super) fn apply_t_cols64(&self, v: &SparseVec, r: &[f32]) -> Vec<f64> {
        let cols = self.columns().expect("column path");
        let len = cols.len;
        let plan = self.plan(v);
        let masks: Vec<Option<&[u64]>> = plan.runs.iter().map(|r| self.mask(r.neuron)).collect();
        let pass = Pass {
            plan: &plan,
            masks: &masks,
            cols,
        };
        let partials: Vec<Vec<f64>> = parts(len, self.threads)
            .into_par_iter()
            .map(|part| simd::wide(TransposePart { pass, r, part }))
            .collect();
        sum_in_order(partials, v.len())
    }

    /// The refinement's fused pass on columns: `u = A_S g` into `u` and `h = A_Sᵀ (A_S g)`
    /// (gates in force) in one sweep over the samples. Each block's `u` is complete once all
    /// runs have added to it, so its `Aᵀ` half reads the block's column segments again while
    /// they are still in cache: one pass from memory where `curvature` and `apply_t` take two.
    /// Returns `(h, ‖u‖²)`, both summed in a fixed order.
    pub(super) fn normal_cols(&self, g: &SparseVec, u: &mut [f32]) -> (Vec<f64>, f64) {
        let cols = self.columns().expect("column path");
        let len = cols.len;
        let plan = self.plan(g);
        let masks: Vec<Option<&[u64]>> = plan.runs.iter().map(|r| self.mask(r.neuron)).collect();
        let ps = parts(len, self.threads);
        let chunks = split_by(&mut u[..len], &ps);
        let pass = Pass {
            plan: &plan,
            masks: &masks,
            cols,
        };
        let partials: Vec<(Vec<f64>, f64)> = chunks
            .into_par_iter()
            .zip(ps)
            .map(|(chunk, part)| {
                simd::wide(NormalPart {
                    pass,
                    g: &g.values,
                    part,
                    chunk,
                })
            })
            .collect();
        let sq = partials.iter().map(|p| p.1).sum();
        let h = sum_in_order(partials.into_iter().map(|p| p.0).collect(), g.len());
        (h, sq)
    }
}

/// What every support pass on columns reads: the support's plan, each run's gate mask
/// (`None`: open) and the columns.
#[derive(Clone, Copy)]
struct Pass<'a> {
    plan: &'a Plan,
    masks: &'a [Option<&'a [u64]>],
    cols: Cols<'a>,
}

impl Pass<'_> {
    /// Samples `lo..lo + bl` of feature column `k`.
    #[inline(always)]
    fn col(&self, k: u32, lo: usize, bl: usize) -> &[f32] {
        self.cols.col(k as usize, lo, bl)
    }

    /// `z = Σ_p v_p · x[·, col p]` over a run's entries `p`, on the `z.len()` samples from
    /// `lo`. Summed entry by entry in f64 (the order of an entry-by-entry loop of axpys, so
    /// the same bits), but [`LANES`] samples at a time, so that the partial sums stay in
    /// registers instead of going through memory once per entry.
    #[inline(always)]
    fn pre_activations<const W: bool>(
        &self,
        entries: Range<usize>,
        v: &[f32],
        lo: usize,
        z: &mut [f64],
    ) {
        let bl = z.len();
        let mut c = 0;
        #[cfg(target_arch = "x86_64")]
        if W {
            let (xt, stride) = (self.cols.xt, self.cols.stride);
            let cols = &self.plan.cols[entries.clone()];
            // Bounds every load of every chunk below at once.
            let top = cols.iter().max().map_or(0, |&k| k as usize * stride);
            assert!(top + lo + bl <= xt.len(), "column out of range");
            while c + LANES <= bl {
                let out: &mut [f64; LANES] = (&mut z[c..c + LANES]).try_into().expect("LANES");
                let offsets = cols.iter().map(|&k| k as usize * stride + lo + c);
                // SAFETY: `W` is only set in the wide copy, run after its features were
                // detected; every offset + LANES ≤ top + lo + bl ≤ xt.len().
                unsafe { simd::lanes_avx2(&v[entries.clone()], offsets, xt, out) };
                c += LANES;
            }
        }
        while c + LANES <= bl {
            let mut acc = [0f64; LANES];
            for p in entries.clone() {
                let w = v[p] as f64;
                let x: &[f32; LANES] = self
                    .col(self.plan.cols[p], lo + c, LANES)
                    .try_into()
                    .expect("LANES samples");
                for (a, &b) in acc.iter_mut().zip(x) {
                    *a += w * b as f64;
                }
            }
            z[c..c + LANES].copy_from_slice(&acc);
            c += LANES;
        }
        let z = &mut z[c..];
        z.fill(0.0);
        for p in entries {
            let w = v[p] as f64;
            let x = self.col(self.plan.cols[p], lo + c, z.len());
            z.iter_mut().zip(x).for_each(|(a, &b)| *a += w * b as f64);
        }
    }

    /// `pred = (A_S v)` on the block of samples starting at `lo` (`pred.len()` of them); `z`
    /// and `open` are scratch of the same length. With `build`, the gates are `v` itself: run
    /// `r`'s gate is open where its own `z` is positive, and those bits go to
    /// `build[r·⌈bl/64⌉..]` instead of being read from the masks.
    #[inline(always)]
    fn forward_block<const W: bool>(
        &self,
        v: &[f32],
        lo: usize,
        pred: &mut [f64],
        z: &mut [f64],
        open: &mut [f64],
        mut build: Option<&mut [u64]>,
    ) {
        let nw = pred.len().div_ceil(64);
        pred.fill(0.0);
        for (r, run) in self.plan.runs.iter().enumerate() {
            self.pre_activations::<W>(run.entries.clone(), v, lo, z);
            let mask = match build.as_deref_mut() {
                Some(words) => {
                    let own = &mut words[r * nw..(r + 1) * nw];
                    positive_bits(z, own);
                    Some((&*own, 0))
                }
                None => self.masks[r].map(|mk| (mk, lo)),
            };
            match mask {
                None => pred.iter_mut().zip(&*z).for_each(|(p, &a)| *p += a),
                Some((mk, at)) => {
                    expand(mk, at, open);
                    for ((p, &a), &o) in pred.iter_mut().zip(&*z).zip(&*open) {
                        *p += a * o;
                    }
                }
            }
        }
    }

    /// `acc[p] += Σ_b x[b, col p] · gate(run of p, b) · rb[b]` over the block starting at
    /// `lo` (`m` is scratch of the block's length).
    #[inline(always)]
    fn transpose_block<const W: bool, const EXACT: bool>(
        &self,
        lo: usize,
        rb: &[f64],
        m: &mut [f64],
        acc: &mut [f64],
    ) {
        let bl = rb.len();
        for (run, mask) in self.plan.runs.iter().zip(self.masks) {
            match mask {
                None => m.copy_from_slice(rb),
                Some(mk) => {
                    expand(mk, lo, m);
                    m.iter_mut().zip(rb).for_each(|(q, &v)| *q *= v);
                }
            }
            let mut p = run.entries.start;
            while p + DOTS <= run.entries.end {
                let b = std::array::from_fn(|e| self.col(self.plan.cols[p + e], lo, bl));
                let d = dots64::<W, EXACT, DOTS>(m, b);
                for (a, d) in acc[p..p + DOTS].iter_mut().zip(d) {
                    *a += d;
                }
                p += DOTS;
            }
            for (a, &k) in acc[p..run.entries.end]
                .iter_mut()
                .zip(&self.plan.cols[p..run.entries.end])
            {
                *a += dot64::<W, EXACT>(m, self.col(k, lo, bl));
            }
        }
    }
}

/// One block of [`CpuBackend::apply_cols`]: its outputs into `chunk`, returning `Σ out²` and,
/// with `build`, the gate bits of its own pre-activations (run by run, `⌈bl/64⌉` words each;
/// see [`Pass::forward_block`]).
struct ApplyBlock<'a> {
    pass: Pass<'a>,
    v: &'a [f32],
    lo: usize,
    chunk: &'a mut [f32],
    /// The targets to subtract, if any.
    y: Option<&'a [f32]>,
    batch: Option<&'a [u32]>,
    build: bool,
}

impl simd::Body for ApplyBlock<'_> {
    type Out = (f64, Vec<u64>);
    #[inline(always)]
    fn run<const W: bool>(self) -> (f64, Vec<u64>) {
        let (lo, bl) = (self.lo, self.chunk.len());
        let mut words = match self.build {
            true => vec![0u64; self.pass.plan.runs.len() * bl.div_ceil(64)],
            false => Vec::new(),
        };
        let build = self.build.then_some(words.as_mut_slice());
        let (mut pred, mut z, mut open) = ([0f64; CB], [0f64; CB], [0f64; CB]);
        let (pred, z, open) = (&mut pred[..bl], &mut z[..bl], &mut open[..bl]);
        self.pass
            .forward_block::<W>(self.v, lo, pred, z, open, build);
        let mut acc = 0f64;
        for (t, (o, &p)) in self.chunk.iter_mut().zip(&*pred).enumerate() {
            let v = match self.y {
                Some(y) => p - y[CpuBackend::sample(self.batch, lo + t)] as f64,
                None => p,
            };
            *o = v as f32;
            acc += v * v;
        }
        (acc, words)
    }
}

/// One thread's part of [`CpuBackend::apply_t_cols64`]: the part's partial gradient.
struct TransposePart<'a> {
    pass: Pass<'a>,
    r: &'a [f32],
    part: Range<usize>,
}

impl simd::Body for TransposePart<'_> {
    type Out = Vec<f64>;
    #[inline(always)]
    fn run<const W: bool>(self) -> Vec<f64> {
        let mut acc = vec![0f64; self.pass.plan.cols.len()];
        let (mut m, mut rb) = ([0f64; CB], [0f64; CB]);
        let part = self.part;
        for lo in part.clone().step_by(CB) {
            let bl = CB.min(part.end - lo);
            let (m, rb) = (&mut m[..bl], &mut rb[..bl]);
            rb.iter_mut()
                .zip(&self.r[lo..lo + bl])
                .for_each(|(a, &b)| *a = b as f64);
            // `rb` holds f32 values, and so does `m` (gates are 0 or 1).
            self.pass.transpose_block::<W, true>(lo, rb, m, &mut acc);
        }
        acc
    }
}

/// Samples per block of the fused pass: a block's column segments (`4·FB` bytes per support
/// entry) stay in L2 between its two halves at `s` in the thousands.
const FB: usize = 256;

/// One thread's part of [`CpuBackend::normal_cols`]: `u` of samples `part` into `chunk`,
/// and the part's `(h, Σ u²)`.
struct NormalPart<'a> {
    pass: Pass<'a>,
    g: &'a [f32],
    part: Range<usize>,
    chunk: &'a mut [f32],
}

impl simd::Body for NormalPart<'_> {
    type Out = (Vec<f64>, f64);
    #[inline(always)]
    fn run<const W: bool>(self) -> Self::Out {
        let mut acc = vec![0f64; self.g.len()];
        let mut sq = 0f64;
        let (mut pred, mut z, mut m) = ([0f64; FB], [0f64; FB], [0f64; FB]);
        let part = self.part;
        for lo in part.clone().step_by(FB) {
            let bl = FB.min(part.end - lo);
            let (pred, z, m) = (&mut pred[..bl], &mut z[..bl], &mut m[..bl]);
            self.pass.forward_block::<W>(self.g, lo, pred, z, m, None);
            let out = &mut self.chunk[lo - part.start..lo - part.start + bl];
            for (o, &p) in out.iter_mut().zip(&*pred) {
                *o = p as f32;
                sq += p * p;
            }
            self.pass.transpose_block::<W, false>(lo, pred, m, &mut acc);
        }
        (acc, sq)
    }
}

/// One neuron's gate bits over the active samples: bit `i` set where `Σ w·x[i, k] > 0` over
/// its (column, weight) pairs, summed in f64 in pair order.
struct GateMask<'a> {
    pairs: &'a [(usize, f64)],
    cols: Cols<'a>,
}

impl simd::Body for GateMask<'_> {
    type Out = Vec<u64>;
    #[inline(always)]
    fn run<const W: bool>(self) -> Vec<u64> {
        let len = self.cols.len;
        let mut mask = vec![0u64; len.div_ceil(64)];
        let mut z = [0f64; CB];
        for lo in (0..len).step_by(CB) {
            let bl = CB.min(len - lo);
            let z = &mut z[..bl];
            z.fill(0.0);
            for &(k, w) in self.pairs {
                let x = self.cols.col(k, lo, bl);
                z.iter_mut().zip(x).for_each(|(a, &b)| *a += w * b as f64);
            }
            // Whole words at a time (blocks start on word boundaries).
            positive_bits(z, &mut mask[lo / 64..(lo + bl).div_ceil(64)]);
        }
        mask
    }
}

/// Sub-blocks of [`CB`] samples within the threads' parts (balanced, mask-word aligned): the
/// blocks of a pass that works block by block.
fn pass_blocks(len: usize, threads: usize) -> Vec<Range<usize>> {
    parts(len, threads)
        .into_iter()
        .flat_map(|p| {
            let end = p.end;
            p.step_by(CB).map(move |lo| lo..(lo + CB).min(end))
        })
        .collect()
}

/// Blocks of [`CB`] samples each thread should take at once, so rayon hands each thread its
/// own part instead of splitting finer.
fn blocks_per_thread(len: usize, threads: usize) -> usize {
    len.div_ceil(CB).div_ceil(threads.max(1)).max(1)
}

/// `Σ a_t · b_t` in f64 over eight lanes (two groups of four, so consecutive adds do not
/// wait on each other), in a fixed order. `W`: the AVX2 copy, written with intrinsics because
/// the compiler shuffles the lanes of the plain version; both round identically (the same
/// products, the same sums). `EXACT`: every `a_t` is an f32 value, so the AVX2 copy may fuse
/// each multiply-add (`simd::madd`).
#[inline(always)]
fn dot64<const W: bool, const EXACT: bool>(a: &[f64], b: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if W {
        // SAFETY: `W` is only set in the copy compiled for AVX2 after it was detected.
        return unsafe { simd::dot64_avx2::<EXACT>(a, b) };
    }
    let n = a.len().min(b.len());
    let (mut lo, mut hi) = ([0f64; 4], [0f64; 4]);
    let mut c = 0;
    while c + 8 <= n {
        for l in 0..4 {
            lo[l] += a[c + l] * b[c + l] as f64;
            hi[l] += a[c + 4 + l] * b[c + 4 + l] as f64;
        }
        c += 8;
    }
    let mut s = ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
    for t in c..n {
        s += a[t] * b[t] as f64;
    }
    s
}

/// Support entries whose dot products with one masked residual run together.
const DOTS: usize = 4;

/// `[dot64(a, b_e)]`, bit for bit; the AVX2 copy interleaves them.
#[inline(always)]
fn dots64<const W: bool, const EXACT: bool, const N: usize>(a: &[f64], b: [&[f32]; N]) -> [f64; N] {
    #[cfg(target_arch = "x86_64")]
    if W {
        // SAFETY: `W` is only set in the copy compiled for AVX2 after it was detected.
        return unsafe { simd::dots64_avx2::<N, EXACT>(a, b) };
    }
    b.map(|b| dot64::<W, EXACT>(a, b))
}

/// The dense pass's masked residual block on columns: `m[b·T + t] = r_{lo+b}` where the gate
/// of tile neuron `t` is open at active sample `lo + b`.
impl CpuBackend {
    pub(super) fn masked_residual(
        &self,
        tile: &[u32],
        r: &[f32],
        lo: usize,
        bl: usize,
        m: &mut [f32],
    ) {
        let t_len = tile.len();
        let mut open = vec![0f32; bl];
        for (t, &j) in tile.iter().enumerate() {
            match self.mask(j) {
                None => open.fill(1.0),
                Some(mk) => expand(mk, lo, &mut open),
            }
            for b in 0..bl {
                m[b * t_len + t] = r[lo + b] * open[b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use simd::Body;

    /// Random f32 values whose magnitudes span many binades, so that any difference in
    /// rounding between two ways of summing them shows.
    fn spread(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-12..12)))
            .collect()
    }

    /// The AVX2 dot products round exactly as the plain one, so a fit does not depend on the
    /// CPU it ran on: lengths around the 8-lane groups and the tail; one at a time and four
    /// interleaved; with fused multiply-adds where the caller promises f32 values (`EXACT`).
    #[test]
    fn wide_and_plain_dot_products_are_bit_identical() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256, 257] {
            let a: Vec<f64> = (0..n).map(|_| rng.random_range(-1e3..1e3)).collect();
            let a32: Vec<f64> = spread(&mut rng, n).into_iter().map(f64::from).collect();
            let b: Vec<Vec<f32>> = (0..4).map(|_| spread(&mut rng, n)).collect();
            let plain = dot64::<false, false>(&a, &b[0]);
            let naive: f64 = a.iter().zip(&b[0]).map(|(x, &y)| x * y as f64).sum();
            assert!(
                (plain - naive).abs() <= 1e-9 * naive.abs().max(1.0),
                "n {n}"
            );
            #[cfg(target_arch = "x86_64")]
            if simd::has_wide() {
                let bs: [&[f32]; 4] = std::array::from_fn(|e| b[e].as_slice());
                for (a, exact) in [(&a, false), (&a32, true)] {
                    let plain = bs.map(|b| dot64::<false, false>(a, b));
                    // SAFETY: AVX2 and FMA were just detected.
                    let (one, four) = unsafe {
                        match exact {
                            true => (
                                simd::dot64_avx2::<true>(a, bs[0]),
                                simd::dots64_avx2::<4, true>(a, bs),
                            ),
                            false => (
                                simd::dot64_avx2::<false>(a, bs[0]),
                                simd::dots64_avx2::<4, false>(a, bs),
                            ),
                        }
                    };
                    assert_eq!(one.to_bits(), plain[0].to_bits(), "n {n}, exact {exact}");
                    for e in 0..4 {
                        assert_eq!(four[e].to_bits(), plain[e].to_bits(), "n {n}, entry {e}");
                    }
                }
            }
        }
    }

    /// Every support pass on columns gives the same bits in its AVX2 copy as in its plain
    /// one: forward blocks (gates from masks, open, or built by the pass), transposes and the
    /// fused normal pass, on a sample count that is no multiple of the lanes, words or blocks,
    /// runs of 1 to 13 entries sharing columns, and values over many binades.
    #[test]
    fn wide_and_plain_support_passes_are_bit_identical() {
        #[cfg(target_arch = "x86_64")]
        if !simd::has_wide() {
            return; // nothing to compare: only the plain copy runs on this CPU
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let (d, len) = (37usize, 300usize);
        let stride = stride_for(len);
        let xt = spread(&mut rng, d * stride);
        let mut runs = Vec::new();
        let mut cols = Vec::new();
        for (j, k) in [1usize, 3, 5, 8, 13, 2].into_iter().enumerate() {
            let mut c: Vec<u32> = rand::seq::index::sample(&mut rng, d, k)
                .into_iter()
                .map(|c| c as u32)
                .collect();
            c.sort_unstable();
            let at = cols.len();
            cols.extend(c);
            runs.push(Run {
                neuron: j as u32,
                entries: at..cols.len(),
                gate: 0..0,
            });
        }
        let plan = Plan {
            runs,
            cols,
            gate_cols: Vec::new(),
        };
        let words: Vec<Vec<u64>> = (0..plan.runs.len())
            .map(|_| (0..len.div_ceil(64)).map(|_| rng.random()).collect())
            .collect();
        // Every other run gated by a mask, the rest open.
        let masks: Vec<Option<&[u64]>> = words
            .iter()
            .enumerate()
            .map(|(r, w)| (r % 2 == 0).then_some(w.as_slice()))
            .collect();
        let pass = Pass {
            plan: &plan,
            masks: &masks,
            cols: Cols {
                xt: &xt,
                stride,
                len,
            },
        };
        let v = spread(&mut rng, plan.cols.len());
        let y = spread(&mut rng, len);
        let both = |f: &dyn Fn(bool) -> Vec<u64>| assert_eq!(f(true), f(false));
        for build in [false, true] {
            both(&|wide| {
                let mut out = Vec::new();
                for lo in (0..len).step_by(CB) {
                    let mut chunk = vec![f32::NAN; CB.min(len - lo)];
                    let body = ApplyBlock {
                        pass,
                        v: &v,
                        lo,
                        chunk: &mut chunk,
                        y: Some(&y),
                        batch: None,
                        build,
                    };
                    let (loss, bits) = match wide {
                        true => body.run::<true>(),
                        false => body.run::<false>(),
                    };
                    out.push(loss.to_bits());
                    out.extend(bits);
                    out.extend(chunk.iter().map(|x| u64::from(x.to_bits())));
                }
                out
            });
        }
        let r = spread(&mut rng, len);
        both(&|wide| {
            let body = TransposePart {
                pass,
                r: &r,
                part: 0..len,
            };
            let g = match wide {
                true => body.run::<true>(),
                false => body.run::<false>(),
            };
            g.iter().map(|x| x.to_bits()).collect()
        });
        both(&|wide| {
            let mut u = vec![f32::NAN; len];
            let body = NormalPart {
                pass,
                g: &v,
                part: 0..len,
                chunk: &mut u,
            };
            let (h, sq) = match wide {
                true => body.run::<true>(),
                false => body.run::<false>(),
            };
            let mut out: Vec<u64> = h.iter().map(|x| x.to_bits()).collect();
            out.push(sq.to_bits());
            out.extend(u.iter().map(|x| u64::from(x.to_bits())));
            out
        });
    }
}
