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
        // Random gates of the tile, generated once per tile: O(tile·d) memory.
        let h_tile: Option<Vec<f32>> = match &self.gates {
            Gates::Random => {
                let mut h = vec![0f32; t_len * d];
                for (t, &j) in tile.iter().enumerate() {
                    rng::gate_vector(self.problem.gate_seed, j, &mut h[t * d..(t + 1) * d]);
                }
                Some(h)
            }
            _ => None,
        };
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

    pub(super) fn tile_neurons(&self) -> usize {
        (TILE_FLOATS / self.problem.d).clamp(1, self.problem.m)
    }
}
