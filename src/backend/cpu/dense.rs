//! The CPU dense pass: for each tile of neurons, the gradient block `G = Xᵀ (1[gates] ∘ r)`
//! from two f32 GEMMs per block of samples (gates, then the masked product), so neither the
//! `n×m` gate matrix nor the `m×d` gradient ever exists.

use super::columns::Cols;
use super::*;

impl CpuBackend {
    /// Neurons whose gates can open at all (weight gates: those with a nonzero gate block).
    pub(super) fn candidate_neurons(&self) -> Vec<u32> {
        match &self.gates {
            Gates::Weights(h) => h
                .neuron_runs(self.problem.d)
                .into_iter()
                .filter(|(_, r)| r.clone().any(|p| h.values[p] != 0.0))
                .map(|(j, _)| j)
                .collect(),
            _ => (0..self.problem.m as u32).collect(),
        }
    }

    /// Dense gradient block `G (T×d) = Σ_i 1[gate] r_i x_i` for one tile of neurons.
    pub(super) fn tile_gradient(&self, tile: &[u32], r: &[f32]) -> Vec<f32> {
        let d = self.problem.d;
        let t_len = tile.len();
        let feat = self.feat();
        let batch = self.batch.as_deref();
        let h_tile = self.random_gates(tile);
        let runs: Vec<Run> = match &self.gates {
            Gates::Weights(h) => tile
                .iter()
                .map(|&j| Run {
                    neuron: j,
                    entries: 0..0,
                    gate: neuron_range(h, j, d),
                })
                .collect(),
            _ => Vec::new(),
        };
        let partials: Vec<Vec<f32>> = parts(r.len(), self.threads)
            .into_par_iter()
            .map(|part| {
                let mut g = vec![0f32; t_len * d];
                let mut x = vec![0f32; BLOCK * d];
                let mut m = vec![0f32; BLOCK * t_len];
                for blk in part.clone().step_by(BLOCK) {
                    let end = (blk + BLOCK).min(part.end);
                    let b_len = end - blk;
                    let chunk = &r[blk..end];
                    for b in 0..b_len {
                        feat.row(Self::sample(batch, blk + b), &mut x[b * d..(b + 1) * d]);
                    }
                    let xb = Rows::sample_major(&x, b_len, d);
                    // Masked residual M (b×T): r_i where the gate of (i, t) is open.
                    match (&self.gates, &h_tile) {
                        (Gates::Random, Some(h)) => random_mask(xb, h, t_len, chunk, &mut m),
                        (Gates::Weights(h), _) => {
                            for b in 0..b_len {
                                let row = &x[b * d..(b + 1) * d];
                                for (t, run) in runs.iter().enumerate() {
                                    let mut pre = 0f64;
                                    for p in run.gate.clone() {
                                        pre += row[h.indices[p] as usize % d] as f64
                                            * h.values[p] as f64;
                                    }
                                    m[b * t_len + t] = if pre > 0.0 { chunk[b] } else { 0.0 };
                                }
                            }
                        }
                        _ => {
                            for b in 0..b_len {
                                m[b * t_len..(b + 1) * t_len].fill(chunk[b]);
                            }
                        }
                    }
                    accumulate(xb, &m, t_len, &mut g);
                }
                g
            })
            .collect();
        sum_in_order(partials, t_len * d)
    }

    /// The random gates of a tile's neurons (`T × d`), generated once per tile; `None` for
    /// other gates.
    fn random_gates(&self, tile: &[u32]) -> Option<Vec<f32>> {
        let d = self.problem.d;
        match &self.gates {
            Gates::Random => {
                let mut h = vec![0f32; tile.len() * d];
                for (t, &j) in tile.iter().enumerate() {
                    rng::gate_vector(self.problem.gate_seed, j, &mut h[t * d..(t + 1) * d]);
                }
                Some(h)
            }
            _ => None,
        }
    }

    /// [`Self::tile_gradient`] on feature-major columns (`xt`, stride `len`): the GEMMs read
    /// the columns in place (strided), over blocks of up to 1024 samples, and weight gates come
    /// from the masks. Per-thread buffers live in `scratch` (one per part, reused from tile to
    /// tile and step to step: fresh multi-page buffers cost page faults); the tile's gradient
    /// is summed in part order into the first.
    pub(super) fn tile_gradient_cols<'s>(
        &self,
        tile: &[u32],
        r: &[f32],
        cols: Cols<'_>,
        scratch: &'s mut Vec<Vec<f32>>,
    ) -> &'s mut [f32] {
        let d = self.problem.d;
        let t_len = tile.len();
        let h_tile = self.random_gates(tile);
        let h_tile = h_tile.as_deref();
        // A multiple of 64 so that blocks start on whole words of the gate masks.
        let rows = (TILE_FLOATS / t_len).clamp(BLOCK, 1024) / 64 * 64;
        let ps = parts(cols.len, self.threads);
        scratch.resize_with(ps.len().max(1), Vec::new);
        let gl = t_len * d;
        scratch.par_iter_mut().zip(ps).for_each(|(buf, part)| {
            if buf.len() < gl + rows * t_len {
                buf.resize(gl + rows * t_len, 0.0);
            }
            let (g, m) = buf.split_at_mut(gl);
            g.fill(0.0);
            for lo in part.clone().step_by(rows) {
                let bl = rows.min(part.end - lo);
                let xb = Rows::feature_major(cols.xt, lo, bl, cols.stride, d);
                match (&self.gates, h_tile) {
                    (Gates::Random, Some(h)) => random_mask(xb, h, t_len, &r[lo..lo + bl], m),
                    _ => self.masked_residual(tile, r, lo, bl, m),
                }
                accumulate(xb, m, t_len, g);
            }
        });
        let (first, rest) = scratch.split_at_mut(1);
        let g = &mut first[0][..gl];
        for p in rest.iter() {
            g.iter_mut().zip(&p[..gl]).for_each(|(a, &b)| *a += b);
        }
        g
    }

    pub(super) fn tile_neurons(&self) -> usize {
        (TILE_FLOATS / self.problem.d).clamp(1, self.problem.m)
    }
}

/// A block of `rows` feature rows of width `d` as a strided view: feature `k` of row `b` at
/// `data[b·rs + k·cs]`. Sample-major rows (`rs = d, cs = 1`) and feature-major columns
/// (`rs = 1, cs = stride`) feed the same GEMMs; matrixmultiply packs either.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    d: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Rows<'a> {
    /// `rows` rows of `x`, row `b` at `x[b·d..(b+1)·d]`.
    fn sample_major(x: &'a [f32], rows: usize, d: usize) -> Self {
        assert!(x.len() >= rows * d);
        Self {
            data: x,
            rows,
            d,
            rs: d,
            cs: 1,
        }
    }

    /// Samples `lo..lo + rows` of the feature-major `xt` (d × stride).
    fn feature_major(xt: &'a [f32], lo: usize, rows: usize, stride: usize, d: usize) -> Self {
        assert!(lo + rows <= stride && xt.len() >= d.saturating_sub(1) * stride + lo + rows);
        Self {
            data: &xt[lo..],
            rows,
            d,
            rs: 1,
            cs: stride,
        }
    }
}

/// The masked residual of a block under random gates: `m[b·T + t] = r_b` where
/// `x_b · h_t > 0`, else 0 (`h` holds the tile's `T` gate vectors, row-major).
fn random_mask(x: Rows, h: &[f32], t_len: usize, r: &[f32], m: &mut [f32]) {
    let (rows, d) = (x.rows, x.d);
    assert!(h.len() >= t_len * d && m.len() >= rows * t_len && r.len() >= rows);
    // P = X_blk · H_tileᵀ into m, then the mask in place.
    // SAFETY: the asserts above and in the `Rows` constructors keep every index the strides
    // address (x: b·rs + k·cs, h: t·d + k, m: b·T + t) within its slice.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            d,
            t_len,
            1.0,
            x.data.as_ptr(),
            x.rs as isize,
            x.cs as isize,
            h.as_ptr(),
            1,
            d as isize,
            0.0,
            m.as_mut_ptr(),
            t_len as isize,
            1,
        );
    }
    for (b, &rb) in r[..rows].iter().enumerate() {
        for q in &mut m[b * t_len..(b + 1) * t_len] {
            *q = if *q > 0.0 { rb } else { 0.0 };
        }
    }
}

/// `g (T × d) += mᵀ · X_blk` for a block's masked residual `m` (rows × T).
fn accumulate(x: Rows, m: &[f32], t_len: usize, g: &mut [f32]) {
    let (rows, d) = (x.rows, x.d);
    assert!(m.len() >= rows * t_len && g.len() >= t_len * d);
    // SAFETY: as in `random_mask`; g is addressed at t·d + k.
    unsafe {
        matrixmultiply::sgemm(
            t_len,
            rows,
            d,
            1.0,
            m.as_ptr(),
            1,
            t_len as isize,
            x.data.as_ptr(),
            x.rs as isize,
            x.cs as isize,
            1.0,
            g.as_mut_ptr(),
            d as isize,
            1,
        );
    }
}
