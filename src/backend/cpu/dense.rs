//! The CPU dense pass: for each tile of neurons, the gradient block `G = Xᵀ (1[gates] ∘ r)`
//! from two f32 GEMMs per block of samples (gates, then the masked product), so neither the
//! `n×m` gate matrix nor the `m×d` gradient ever exists.

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
                    // Masked residual M (b×T): r_i where the gate of (i, t) is open.
                    match (&self.gates, &h_tile) {
                        (Gates::Random, Some(h)) => {
                            // P = X_blk · H_tileᵀ, then the mask in place.
                            // SAFETY: dimensions and strides describe the live buffers above.
                            unsafe {
                                matrixmultiply::sgemm(
                                    b_len,
                                    d,
                                    t_len,
                                    1.0,
                                    x.as_ptr(),
                                    d as isize,
                                    1,
                                    h.as_ptr(),
                                    1,
                                    d as isize,
                                    0.0,
                                    m.as_mut_ptr(),
                                    t_len as isize,
                                    1,
                                );
                            }
                            for b in 0..b_len {
                                for q in &mut m[b * t_len..(b + 1) * t_len] {
                                    *q = if *q > 0.0 { chunk[b] } else { 0.0 };
                                }
                            }
                        }
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
                    // G += Mᵀ · X_blk
                    // SAFETY: as above.
                    unsafe {
                        matrixmultiply::sgemm(
                            t_len,
                            b_len,
                            d,
                            1.0,
                            m.as_ptr(),
                            1,
                            t_len as isize,
                            x.as_ptr(),
                            d as isize,
                            1,
                            1.0,
                            g.as_mut_ptr(),
                            d as isize,
                            1,
                        );
                    }
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
        (xt, len): (&[f32], usize),
        scratch: &'s mut Vec<Vec<f32>>,
    ) -> &'s mut [f32] {
        let d = self.problem.d;
        let t_len = tile.len();
        let h_tile = self.random_gates(tile);
        let h_tile = h_tile.as_deref();
        // A multiple of 64 so that blocks start on whole words of the gate masks.
        let rows = (TILE_FLOATS / t_len).clamp(BLOCK, 1024) / 64 * 64;
        let ps = parts(len, self.threads);
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
                // X_blk (bl × d): element (b, k) at xt[k·len + lo + b].
                let x = xt[lo..].as_ptr();
                match (&self.gates, h_tile) {
                    (Gates::Random, Some(h)) => {
                        // P = X_blk · H_tileᵀ, then the mask in place.
                        // SAFETY: the strides address xt[lo + b + k·len] (b < bl, k < d),
                        // h[t·d + k] and m[b·T + t], all within their buffers.
                        unsafe {
                            matrixmultiply::sgemm(
                                bl,
                                d,
                                t_len,
                                1.0,
                                x,
                                1,
                                len as isize,
                                h.as_ptr(),
                                1,
                                d as isize,
                                0.0,
                                m.as_mut_ptr(),
                                t_len as isize,
                                1,
                            );
                        }
                        for b in 0..bl {
                            for q in &mut m[b * t_len..(b + 1) * t_len] {
                                *q = if *q > 0.0 { r[lo + b] } else { 0.0 };
                            }
                        }
                    }
                    _ => self.masked_residual(tile, r, lo, bl, m),
                }
                // G += Mᵀ · X_blk
                // SAFETY: as above; g is T × d.
                unsafe {
                    matrixmultiply::sgemm(
                        t_len,
                        bl,
                        d,
                        1.0,
                        m.as_ptr(),
                        1,
                        t_len as isize,
                        x,
                        1,
                        len as isize,
                        1.0,
                        g.as_mut_ptr(),
                        d as isize,
                        1,
                    );
                }
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
