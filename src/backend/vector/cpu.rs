//! The CPU backend of [`VectorBackend`]: rayon over fixed sample partitions summed in order
//! (deterministic), f64 accumulation on the support, f32 GEMM tiles (matrixmultiply) in the
//! dense pass, so no `n×m` or `m×d` array is ever held.

use super::{
    check_batch, check_weights, tile_rows, DenseSelect, Selection, VectorBackend, VectorProblem,
};
use crate::backend::{BackendInfo, MemoryMeter, MemoryStats, Slot};
use crate::error::{Error, Param, Result};
use crate::sparse::{SparseVec, TopS};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// Samples per block.
const BLOCK: usize = 128;
/// Floats per dense-pass tile of `W1` (`tile·d`).
const TILE_FLOATS: usize = 1 << 16;

/// A support split by block: per unit, its `W1` entries and its `W2` entries.
pub(super) struct Plan {
    /// (unit, W1 entry range, W2 entry range) for every unit with any entry.
    pub units: Vec<(usize, Range<usize>, Range<usize>)>,
    /// Feature of each W1 entry, output of each W2 entry.
    pub col: Vec<u32>,
}

pub(super) fn plan(v: &SparseVec, d: usize, c: usize, w2: usize) -> Plan {
    let mut units: Vec<(usize, Range<usize>, Range<usize>)> = Vec::new();
    let split = v.indices.partition_point(|&i| (i as usize) < w2);
    let mut col = Vec::with_capacity(v.len());
    let mut p = 0;
    while p < split {
        let j = v.indices[p] as usize / d;
        let start = p;
        while p < split && v.indices[p] as usize / d == j {
            col.push(v.indices[p] % d as u32);
            p += 1;
        }
        units.push((j, start..p, 0..0));
    }
    let mut q = split;
    let mut u = 0;
    while q < v.len() {
        let rel = v.indices[q] as usize - w2;
        let j = rel / c;
        let start = q;
        while q < v.len() && (v.indices[q] as usize - w2) / c == j {
            col.push(((v.indices[q] as usize - w2) % c) as u32);
            q += 1;
        }
        while u < units.len() && units[u].0 < j {
            u += 1;
        }
        if u < units.len() && units[u].0 == j {
            units[u].2 = start..q;
        } else {
            units.insert(u, (j, 0..0, start..q));
        }
    }
    Plan { units, col }
}

pub struct CpuVector {
    p: Arc<VectorProblem>,
    slots: Vec<SparseVec>,
    batch: Option<Vec<u32>>,
    resid: Vec<f32>,
    trial_resid: Vec<f32>,
    select: DenseSelect,
    /// Random gates for units without `W1` entries.
    pub recruit: bool,
    meter: MemoryMeter,
    threads: usize,
}

impl CpuVector {
    pub fn new(p: Arc<VectorProblem>, s: usize) -> Result<Self> {
        if s == 0 || s > p.signal_len() {
            return Err(Error::invalid(
                Param::Nonzeros,
                format!(
                    "s = {s} must be between 1 and m·(d + C) = {}",
                    p.signal_len()
                ),
            ));
        }
        let select = DenseSelect::new(&p, s);
        let mut meter = MemoryMeter::default();
        meter.alloc((Slot::COUNT * s * 8 + 2 * p.n * p.c * 4 + select.bytes()) as u64);
        Ok(Self {
            slots: vec![SparseVec::new(); Slot::COUNT],
            batch: None,
            resid: vec![0.0; p.n * p.c],
            trial_resid: vec![0.0; p.n * p.c],
            select,
            recruit: true,
            meter,
            threads: rayon::current_num_threads(),
            p,
        })
    }

    fn n_act(&self) -> usize {
        self.batch.as_ref().map_or(self.p.n, |b| b.len())
    }

    fn sample(&self, idx: usize) -> usize {
        self.batch.as_ref().map_or(idx, |b| b[idx] as usize)
    }

    /// Pre-activations of the plan's units at one sample.
    fn pre(&self, v: &SparseVec, plan: &Plan, x: &[f32], z: &mut Vec<f64>) {
        z.clear();
        z.extend(plan.units.iter().map(|(_, r1, _)| {
            r1.clone()
                .map(|q| x[plan.col[q] as usize] as f64 * v.values[q] as f64)
                .sum::<f64>()
        }));
    }

    /// Scores of the active samples (`n_act × C`).
    fn scores(&self, v: &SparseVec, all: bool) -> Vec<f32> {
        let (d, c) = (self.p.d, self.p.c);
        let pl = plan(v, d, c, self.p.w2_offset());
        let n = if all { self.p.n } else { self.n_act() };
        let mut out = vec![0f32; n * c];
        out.par_chunks_mut(BLOCK * c)
            .enumerate()
            .for_each(|(b, chunk)| {
                let mut z = Vec::new();
                for (t, f) in chunk.chunks_mut(c).enumerate() {
                    let idx = b * BLOCK + t;
                    let i = if all { idx } else { self.sample(idx) };
                    let x = &self.p.x[i * d..(i + 1) * d];
                    self.pre(v, &pl, x, &mut z);
                    let mut acc = vec![0f64; c];
                    for ((_, _, r2), &zu) in pl.units.iter().zip(&z) {
                        if zu > 0.0 {
                            for q in r2.clone() {
                                acc[pl.col[q] as usize] += zu * v.values[q] as f64;
                            }
                        }
                    }
                    for (o, a) in f.iter_mut().zip(acc) {
                        *o = a as f32;
                    }
                }
            });
        out
    }

    fn loss_into(&self, v: &SparseVec, resid: &mut Vec<f32>) -> f64 {
        let n = self.n_act();
        let f = self.scores(v, false);
        let rows: Vec<u32> = (0..n).map(|t| self.sample(t) as u32).collect();
        resid.resize(n * self.p.c, 0.0);
        self.p.loss_residual(&f, &rows, resid)
    }

    /// The gradient on the support of `v` with residual `r`.
    fn support_gradient(&self, v: &SparseVec, r: &[f32]) -> Vec<f32> {
        let (d, c) = (self.p.d, self.p.c);
        let pl = plan(v, d, c, self.p.w2_offset());
        let n = self.n_act();
        let parts = parts(n, self.threads);
        let partials: Vec<Vec<f64>> = parts
            .into_par_iter()
            .map(|range| {
                let mut g = vec![0f64; v.len()];
                let mut z = Vec::new();
                for t in range {
                    let i = self.sample(t);
                    let x = &self.p.x[i * d..(i + 1) * d];
                    let ri = &r[t * c..(t + 1) * c];
                    self.pre(v, &pl, x, &mut z);
                    for ((_, r1, r2), &zu) in pl.units.iter().zip(&z) {
                        if zu <= 0.0 {
                            continue;
                        }
                        // e = R_i · W2_j
                        let mut e = 0f64;
                        for q in r2.clone() {
                            let rc = ri[pl.col[q] as usize] as f64;
                            e += rc * v.values[q] as f64;
                            g[q] += zu * rc;
                        }
                        if e != 0.0 {
                            for q in r1.clone() {
                                g[q] += e * x[pl.col[q] as usize] as f64;
                            }
                        }
                    }
                }
                g
            })
            .collect();
        let mut acc = vec![0f64; v.len()];
        for p in partials {
            acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
        acc.into_iter().map(|x| x as f32).collect()
    }

    /// Dense gradient of one tile of units `j0..j0+t` (`G1` t×d, `G2` t×C).
    fn tile_gradient(&self, w: &SparseVec, j0: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
        let (d, c) = (self.p.d, self.p.c);
        let (gate, has_w1, w2t) = tile_rows(&self.p, w, j0, t, self.recruit);
        let n = self.n_act();
        let r = &self.resid;
        let partials: Vec<(Vec<f32>, Vec<f32>)> = parts(n, self.threads)
            .into_par_iter()
            .map(|range| {
                let mut g1 = vec![0f32; t * d];
                let mut g2 = vec![0f32; t * c];
                let mut xb = vec![0f32; BLOCK * d];
                let mut zb = vec![0f32; BLOCK * t];
                for b0 in range.clone().step_by(BLOCK) {
                    let bl = (b0 + BLOCK).min(range.end) - b0;
                    for k in 0..bl {
                        let i = self.sample(b0 + k);
                        xb[k * d..(k + 1) * d].copy_from_slice(&self.p.x[i * d..(i + 1) * d]);
                    }
                    // Z = X_blk · Gateᵀ (bl × t).
                    // SAFETY: dimensions and strides describe the live buffers above.
                    unsafe {
                        matrixmultiply::sgemm(
                            bl,
                            d,
                            t,
                            1.0,
                            xb.as_ptr(),
                            d as isize,
                            1,
                            gate.as_ptr(),
                            1,
                            d as isize,
                            0.0,
                            zb.as_mut_ptr(),
                            t as isize,
                            1,
                        );
                    }
                    for k in 0..bl {
                        let rk = &r[(b0 + k) * c..(b0 + k + 1) * c];
                        for u in 0..t {
                            let z = zb[k * t + u];
                            let (on, h) = (z > 0.0, if has_w1[u] { z.max(0.0) } else { 0.0 });
                            let w2u = &w2t[u * c..(u + 1) * c];
                            let mut e = 0f32;
                            for cc in 0..c {
                                e += rk[cc] * w2u[cc];
                                g2[u * c + cc] += h * rk[cc];
                            }
                            // M (bl × t): the residual each unit passes back, where it is on.
                            zb[k * t + u] = if on { e } else { 0.0 };
                        }
                    }
                    // G1 += Mᵀ · X_blk (t × d).
                    // SAFETY: as above.
                    unsafe {
                        matrixmultiply::sgemm(
                            t,
                            bl,
                            d,
                            1.0,
                            zb.as_ptr(),
                            1,
                            t as isize,
                            xb.as_ptr(),
                            d as isize,
                            1,
                            1.0,
                            g1.as_mut_ptr(),
                            d as isize,
                            1,
                        );
                    }
                }
                (g1, g2)
            })
            .collect();
        let mut it = partials.into_iter();
        let (mut g1, mut g2) = it.next().unwrap_or((vec![0.0; t * d], vec![0.0; t * c]));
        for (a, b) in it {
            g1.iter_mut().zip(&a).for_each(|(x, y)| *x += y);
            g2.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        }
        (g1, g2)
    }
}

/// Splits `0..len` into at most `threads` contiguous, block-aligned parts: a fixed partition,
/// so partial sums add in the same order on every run.
fn parts(len: usize, threads: usize) -> Vec<Range<usize>> {
    let blocks = len.div_ceil(BLOCK);
    let per = blocks.div_ceil(threads.max(1)).max(1);
    (0..blocks)
        .step_by(per)
        .map(|b| b * BLOCK..((b + per) * BLOCK).min(len))
        .collect()
}

impl VectorBackend for CpuVector {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "cpu",
            adapter: format!("CPU ({} threads)", self.threads),
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
        self.batch = batch.map(|b| b.to_vec());
        Ok(())
    }

    fn forward(&mut self, v: Slot) -> Result<f64> {
        let mut r = std::mem::take(&mut self.resid);
        let loss = self.loss_into(&self.slots[v.index()], &mut r);
        self.resid = r;
        Ok(loss)
    }

    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        let vv = &self.slots[v.index()];
        let gv = SparseVec {
            indices: vv.indices.clone(),
            values: self.support_gradient(vv, &self.resid),
        };
        let n2 = gv.norm2();
        self.slots[g.index()] = gv;
        Ok(n2)
    }

    fn trial(&mut self, v: Slot, g: Slot, dst: Slot, mu: f32) -> Result<f64> {
        let t = self.slots[v.index()]
            .plus_scaled(&self.slots[g.index()], -mu)
            .ok_or_else(|| Error::invalid(Param::Slot, "trial needs g on v's support"))?;
        let mut r = std::mem::take(&mut self.trial_resid);
        let loss = self.loss_into(&t, &mut r);
        self.trial_resid = r;
        self.slots[dst.index()] = t;
        Ok(loss)
    }

    fn accept_trial(&mut self) -> Result<()> {
        std::mem::swap(&mut self.resid, &mut self.trial_resid);
        Ok(())
    }

    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot, how: Selection) -> Result<()> {
        let (d, m) = (self.p.d, self.p.m);
        let wv = self.slots[w.index()].clone();
        let t_len = (TILE_FLOATS / d).clamp(1, m);
        let tile_bytes =
            (4 * (self.threads + 2) * (2 * t_len * d + BLOCK * d + BLOCK * t_len)) as u64;
        self.meter
            .alloc(tile_bytes + TopS::capacity_bytes(s) as u64);
        self.meter.set_tile(tile_bytes);
        let mut top = TopS::new(s);
        for j0 in (0..m).step_by(t_len) {
            let t = t_len.min(m - j0);
            let (g1, g2) = self.tile_gradient(&wv, j0, t);
            self.select
                .push_tile(&self.p, &mut top, how, &wv, mu, j0, &g1, &g2);
        }
        self.slots[dst.index()] = self.select.finish(&self.p, top, how);
        self.meter.free(tile_bytes + TopS::capacity_bytes(s) as u64);
        Ok(())
    }

    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        Ok(self.scores(&self.slots[v.index()], true))
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Targets;
    use super::*;

    /// Loss by a direct formula on dense weights.
    fn loss_dense(p: &VectorProblem, w: &[f32]) -> f64 {
        let (d, c, m) = (p.d, p.c, p.m);
        let mut total = 0.0;
        for i in 0..p.n {
            let x = &p.x[i * d..(i + 1) * d];
            let mut f = vec![0f64; c];
            for j in 0..m {
                let z: f64 = (0..d).map(|k| w[j * d + k] as f64 * x[k] as f64).sum();
                if z > 0.0 {
                    for cc in 0..c {
                        f[cc] += z * w[m * d + j * c + cc] as f64;
                    }
                }
            }
            total += match &p.targets {
                Targets::Classes(l) => {
                    let max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = max + f.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    lse - f[l[i] as usize]
                }
                Targets::Values(y) => (0..c)
                    .map(|k| (f[k] - y[i * c + k] as f64).powi(2))
                    .sum::<f64>(),
            };
        }
        total / p.n as f64
    }

    fn problem(n: usize, d: usize, m: usize, c: usize) -> VectorProblem {
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let labels = (0..n).map(|i| (i * 31 % c) as u8).collect();
        VectorProblem::new(d, m, c, x, Targets::Classes(labels), 3).unwrap()
    }

    /// The same features with real targets (squared error).
    fn regression(n: usize, d: usize, m: usize, c: usize) -> VectorProblem {
        let p = problem(n, d, m, c.max(2));
        let y = (0..n * c)
            .map(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0)
            .collect();
        VectorProblem::new(d, m, c, p.x, Targets::Values(y), 3).unwrap()
    }

    #[test]
    fn support_gradient_matches_finite_differences() {
        for p in [
            problem(37, 5, 4, 3),
            regression(37, 5, 4, 3),
            regression(29, 4, 3, 1),
        ] {
            support_gradient_case(Arc::new(p));
        }
    }

    fn support_gradient_case(p: Arc<VectorProblem>) {
        let len = p.signal_len();
        let w = SparseVec::from_pairs(
            (0..len as u32)
                .filter(|i| i % 3 != 1)
                .map(|i| (i, p.initial_value(i) * 3.0))
                .collect(),
        );
        let mut b = CpuVector::new(p.clone(), len).unwrap();
        b.load(Slot::W, &w).unwrap();
        let l0 = b.forward(Slot::W).unwrap();
        let dense = w.to_dense(len);
        let want = loss_dense(&p, &dense);
        assert!((l0 - want).abs() < 1e-6 * (1.0 + want), "{l0} vs {want}");
        b.gradient(Slot::W, Slot::G).unwrap();
        let g = b.read(Slot::G).unwrap();
        for (q, &i) in w.indices.iter().enumerate() {
            let h = 1e-3;
            let (mut a, mut bb) = (dense.clone(), dense.clone());
            a[i as usize] += h;
            bb[i as usize] -= h;
            let fd = (loss_dense(&p, &a) - loss_dense(&p, &bb)) / (2.0 * h as f64);
            assert!(
                (fd - g.values[q] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                "{i}: {fd} vs {}",
                g.values[q]
            );
        }
    }

    #[test]
    fn dense_pass_gradient_equals_the_support_gradient_on_every_entry() {
        for p in [problem(50, 6, 5, 3), regression(50, 6, 5, 2)] {
            dense_pass_case(Arc::new(p));
        }
    }

    fn dense_pass_case(p: Arc<VectorProblem>) {
        // With every entry in the support, thresholding with μ and s = len gives w − μ g.
        let len = p.signal_len();
        let w = SparseVec::from_pairs((0..len as u32).map(|i| (i, p.initial_value(i))).collect());
        let mut b = CpuVector::new(p, len).unwrap();
        b.load(Slot::W, &w).unwrap();
        b.forward(Slot::W).unwrap();
        b.gradient(Slot::W, Slot::G).unwrap();
        let g = b.read(Slot::G).unwrap();
        b.threshold(Slot::W, 0.5, len, Slot::V, Selection::Exact)
            .unwrap();
        let c = b.read(Slot::V).unwrap();
        assert_eq!(c.indices, w.indices);
        for q in 0..len {
            let want = w.values[q] - 0.5 * g.values[q];
            assert!(
                (c.values[q] - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{q}"
            );
        }
    }
}
