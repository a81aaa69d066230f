//! The fast path of the CPU support passes: features held feature-major (column `k` is feature
//! `k` of every active sample, contiguous), so a support entry's contribution to a block of
//! samples is one SIMD-friendly loop over contiguous memory; and the gates of each neuron kept
//! as a bit mask over the active samples (`n` bits per neuron with entries, as the GPU keeps
//! them), built once per gate snapshot and minibatch instead of once per pass.
//!
//! Used when the features fit the cache budget (`CpuBackend::new`'s `feature_cache`); the
//! row path in `rows.rs` (features generated or read row by row, gates evaluated per pass)
//! serves the rest and is tested against the same oracle.

use super::*;
use crate::samples::{self, SampleBlocks, SampleSource};
use std::collections::HashMap;

/// Samples per block of a support pass: the per-block accumulators stay in L1.
const CB: usize = 256;

/// Feature-major copies of the features: `all` (d × n) and, during a minibatch, `batch`
/// (d × batch length, gathered once per `set_batch`).
#[derive(Default)]
pub(super) struct Columns {
    pub all: Option<Vec<f32>>,
    pub batch: Option<Vec<f32>>,
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

/// Writes the gate bits of positions `lo..lo + out.len()` as 0.0 / 1.0 (`lo` a multiple of
/// 64). Branch-free: gates are open about half the time, so a branch per sample mispredicts.
#[inline]
fn expand<T: From<u8>>(mask: &[u64], lo: usize, out: &mut [T]) {
    debug_assert_eq!(lo % 64, 0);
    for (c, chunk) in out.chunks_mut(64).enumerate() {
        let w = mask[lo / 64 + c];
        for (t, o) in chunk.iter_mut().enumerate() {
            *o = T::from(((w >> t) & 1) as u8);
        }
    }
}

/// All features of `src`, feature-major (d columns of n samples), read a block of samples at a
/// time.
pub(super) fn from_source(src: &dyn SampleSource) -> Result<Vec<f32>> {
    let (n, d) = (src.samples(), src.features());
    let mut xt = vec![0f32; d * n];
    let blocks = SampleBlocks::within(n, d, samples::BLOCK_BYTES, CB);
    samples::for_each_rows(src, blocks, |range, rows| {
        samples::scatter_columns(&mut xt, n, 0, range, rows, d);
        Ok(())
    })?;
    Ok(xt)
}

/// The columns (d × `ids.len()`) of the samples `ids`, where `row(i, out)` fills sample `i`'s
/// `d` features: a minibatch's own copy.
pub(super) fn gather(d: usize, ids: &[u32], row: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let len = ids.len();
    let mut xt = vec![0f32; d * len];
    // Rows are produced in parallel, a wave of blocks at a time (so the row copies never
    // approach the size of `xt` itself), then written into their column segments.
    let blocks: Vec<usize> = (0..len.div_ceil(CB)).collect();
    let wave = 16 * rayon::current_num_threads().max(1);
    for group in blocks.chunks(wave) {
        let rows: Vec<(usize, Vec<f32>)> = group
            .par_iter()
            .map(|&b| {
                let lo = b * CB;
                let hi = (lo + CB).min(len);
                let mut rows = vec![0f32; (hi - lo) * d];
                for (t, &sample) in ids[lo..hi].iter().enumerate() {
                    row(sample as usize, &mut rows[t * d..(t + 1) * d]);
                }
                (lo, rows)
            })
            .collect();
        for (lo, rows) in rows {
            let bl = rows.len() / d.max(1);
            for t in 0..bl {
                for k in 0..d {
                    xt[k * len + lo + t] = rows[t * d + k];
                }
            }
        }
    }
    xt
}

impl CpuBackend {
    /// The active samples' columns and their stride (the active length), if held.
    pub(super) fn columns(&self) -> Option<(&[f32], usize)> {
        let len = self.n_active();
        match &self.batch {
            Some(_) => self.cols.batch.as_deref().map(|x| (x, len)),
            None => self.cols.all.as_deref().map(|x| (x, len)),
        }
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
        let (xt, len) = self.columns().expect("checked above");
        let d = self.problem.d;
        let words = len.div_ceil(64);
        let seed = self.problem.gate_seed;
        let gates = &self.gates;
        let built: Vec<(u32, Vec<u64>)> = missing
            .par_iter()
            .map(|&j| {
                let mut mask = vec![0u64; words];
                let mut z = [0f64; CB];
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
                for lo in (0..len).step_by(CB) {
                    let bl = CB.min(len - lo);
                    let z = &mut z[..bl];
                    z.fill(0.0);
                    for &(k, w) in &pairs {
                        let x = &xt[k * len + lo..k * len + lo + bl];
                        z.iter_mut().zip(x).for_each(|(a, &b)| *a += w * b as f64);
                    }
                    for (t, &v) in z.iter().enumerate() {
                        if v > 0.0 {
                            let i = lo + t;
                            mask[i / 64] |= 1 << (i % 64);
                        }
                    }
                }
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
        let (xt, len) = self.columns().expect("column path");
        let plan = self.plan(v);
        let masks: Vec<Option<&[u64]>> = plan.runs.iter().map(|r| self.mask(r.neuron)).collect();
        let batch = self.batch.as_deref();
        let y = &self.problem.y;
        // Sub-blocks of CB samples within the threads' parts (balanced, mask-word aligned).
        let blocks: Vec<Range<usize>> = parts(len, self.threads)
            .into_iter()
            .flat_map(|p| {
                let end = p.end;
                p.step_by(CB).map(move |lo| lo..(lo + CB).min(end))
            })
            .collect();
        let mut chunks: Vec<&mut [f32]> = Vec::with_capacity(blocks.len());
        let mut rest = out;
        for b in &blocks {
            let (head, tail) = rest.split_at_mut(b.len());
            chunks.push(head);
            rest = tail;
        }
        let sums: Vec<f64> = chunks
            .into_par_iter()
            .zip(blocks)
            .with_min_len(blocks_per_thread(len, self.threads))
            .map(|(chunk, range)| {
                let lo = range.start;
                let bl = chunk.len();
                let mut pred = [0f64; CB];
                let mut z = [0f64; CB];
                let mut open = [0f64; CB];
                let (pred, z, open) = (&mut pred[..bl], &mut z[..bl], &mut open[..bl]);
                for (run, mask) in plan.runs.iter().zip(&masks) {
                    z.fill(0.0);
                    for p in run.entries.clone() {
                        let k = plan.cols[p] as usize;
                        let w = v.values[p] as f64;
                        let x = &xt[k * len + lo..k * len + lo + bl];
                        z.iter_mut().zip(x).for_each(|(a, &b)| *a += w * b as f64);
                    }
                    match mask {
                        None => pred.iter_mut().zip(&*z).for_each(|(p, &a)| *p += a),
                        Some(m) => {
                            expand(m, lo, open);
                            for ((p, &a), &o) in pred.iter_mut().zip(&*z).zip(&*open) {
                                *p += a * o;
                            }
                        }
                    }
                }
                let mut acc = 0f64;
                for (t, (o, &p)) in chunk.iter_mut().zip(&*pred).enumerate() {
                    let v = if subtract_y {
                        p - y[Self::sample(batch, lo + t)] as f64
                    } else {
                        p
                    };
                    *o = v as f32;
                    acc += v * v;
                }
                acc
            })
            .collect();
        sums.iter().sum() // in block order: the same rounding on every run
    }

    /// [`CpuBackend::apply_t`] on columns: per block, each run's masked residual, then one
    /// contiguous dot product per support entry.
    pub(super) fn apply_t_cols(&self, v: &SparseVec, r: &[f32]) -> Vec<f32> {
        let (xt, len) = self.columns().expect("column path");
        let plan = self.plan(v);
        let masks: Vec<Option<&[u64]>> = plan.runs.iter().map(|r| self.mask(r.neuron)).collect();
        let s = v.len();
        let partials: Vec<Vec<f64>> = parts(len, self.threads)
            .into_par_iter()
            .map(|part| {
                let mut acc = vec![0f64; s];
                let mut m = [0f64; CB];
                let mut rb = [0f64; CB];
                for lo in part.clone().step_by(CB) {
                    let bl = CB.min(part.end - lo);
                    let (m, rb) = (&mut m[..bl], &mut rb[..bl]);
                    rb.iter_mut()
                        .zip(&r[lo..lo + bl])
                        .for_each(|(a, &b)| *a = b as f64);
                    for (run, mask) in plan.runs.iter().zip(&masks) {
                        match mask {
                            None => m.copy_from_slice(rb),
                            Some(mk) => {
                                expand(mk, lo, m);
                                m.iter_mut().zip(&*rb).for_each(|(q, &v)| *q *= v);
                            }
                        }
                        for p in run.entries.clone() {
                            let k = plan.cols[p] as usize;
                            let x = &xt[k * len + lo..k * len + lo + bl];
                            acc[p] += dot64(m, x);
                        }
                    }
                }
                acc
            })
            .collect();
        let g = sum_in_order(partials, s);
        g.into_iter().map(|x| x as f32).collect()
    }
}

/// Blocks of [`CB`] samples each thread should take at once, so rayon hands each thread its
/// own part instead of splitting finer.
fn blocks_per_thread(len: usize, threads: usize) -> usize {
    len.div_ceil(CB).div_ceil(threads.max(1)).max(1)
}

/// `Σ a_t · b_t` in f64 with four independent lanes (vectorises; a fixed order).
#[inline]
fn dot64(a: &[f64], b: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[c * 4 + l] * b[c * 4 + l] as f64;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for t in chunks * 4..a.len() {
        s += a[t] * b[t] as f64;
    }
    s
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
