//! The CPU backend of [`VectorBackend`]: rayon over fixed sample partitions summed in order
//! (deterministic), f64 accumulation on the support, f32 GEMM tiles (matrixmultiply) in the
//! dense pass, so no `n×m` or `m×d` array is ever held.

use super::{sketch_shape, softmax_residual, Selection, VectorBackend, VectorProblem};
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
struct Plan {
    /// (unit, W1 entry range, W2 entry range) for every unit with any entry.
    units: Vec<(usize, Range<usize>, Range<usize>)>,
    /// Feature of each W1 entry, output of each W2 entry.
    col: Vec<u32>,
}

fn plan(v: &SparseVec, d: usize, c: usize, w2: usize) -> Plan {
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
    /// Count-sketch of accumulated updates (`Selection::Sketch`), depth × width.
    sketch: Vec<f32>,
    sketch_shape: (usize, usize),
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
        let (w, depth) = sketch_shape(s, p.signal_len());
        let mut meter = MemoryMeter::default();
        meter.alloc((Slot::COUNT * s * 8 + 2 * p.n * p.c * 4 + w * depth * 4) as u64);
        Ok(Self {
            slots: vec![SparseVec::new(); Slot::COUNT],
            batch: None,
            resid: vec![0.0; p.n * p.c],
            trial_resid: vec![0.0; p.n * p.c],
            sketch: vec![0.0; w * depth],
            sketch_shape: (w, depth),
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
        let labels: Vec<u8> = (0..n).map(|t| self.p.labels[self.sample(t)]).collect();
        resid.resize(n * self.p.c, 0.0);
        softmax_residual(&f, &labels, self.p.c, n, resid)
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
        let (d, c, m) = (self.p.d, self.p.c, self.p.m);
        let w2 = self.p.w2_offset();
        // Dense W1 rows of the tile (gate vectors: random for units without W1 entries when
        // recruiting) and W2 rows.
        let mut gate = vec![0f32; t * d];
        let mut has_w1 = vec![false; t];
        let mut w2t = vec![0f32; t * c];
        let lo = w.indices.partition_point(|&i| (i as usize) < j0 * d);
        let hi = w.indices.partition_point(|&i| (i as usize) < (j0 + t) * d);
        for q in lo..hi {
            let i = w.indices[q] as usize;
            gate[i - j0 * d] = w.values[q];
            has_w1[i / d - j0] = true;
        }
        let lo2 = w.indices.partition_point(|&i| (i as usize) < w2 + j0 * c);
        let hi2 = w
            .indices
            .partition_point(|&i| (i as usize) < w2 + (j0 + t) * c);
        for q in lo2..hi2 {
            w2t[w.indices[q] as usize - w2 - j0 * c] = w.values[q];
        }
        if self.recruit {
            for u in 0..t {
                if !has_w1[u] && j0 + u < m {
                    crate::rng::gate_vector(
                        self.p.seed,
                        (j0 + u) as u32,
                        &mut gate[u * d..(u + 1) * d],
                    );
                }
            }
        }
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

    fn sketch_slot(&self, row: usize, i: u32) -> (usize, f32) {
        let (w, _) = self.sketch_shape;
        let h = crate::rng::hash32(crate::rng::gate_key(self.p.seed ^ 0x5ca1_ab1e, i) ^ row as u32);
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        (row * w + (h >> 1) as usize % w, sign)
    }

    fn sketch_query(&self, i: u32) -> f32 {
        let depth = self.sketch_shape.1;
        let mut v: Vec<f32> = (0..depth)
            .map(|r| {
                let (k, sg) = self.sketch_slot(r, i);
                sg * self.sketch[k]
            })
            .collect();
        v.sort_by(f32::total_cmp);
        v[depth / 2]
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
        if w.indices
            .last()
            .is_some_and(|&i| i as usize >= self.p.signal_len())
            || w.indices.windows(2).any(|p| p[0] >= p[1])
        {
            return Err(Error::invalid(
                Param::Model,
                "indices must increase and stay below m·(d + C)",
            ));
        }
        crate::error::check_finite("weights", &w.values)?;
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
        if let Some(b) = batch {
            if b.is_empty() || b.iter().any(|&i| i as usize >= self.p.n) {
                return Err(Error::invalid(
                    Param::BatchSize,
                    "empty batch or sample out of range",
                ));
            }
        }
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
        let (vv, gv) = (&self.slots[v.index()], &self.slots[g.index()]);
        if vv.indices != gv.indices {
            return Err(Error::invalid(Param::Slot, "trial needs g on v's support"));
        }
        let t = SparseVec {
            indices: vv.indices.clone(),
            values: vv
                .values
                .iter()
                .zip(&gv.values)
                .map(|(&a, &b)| a - mu * b)
                .collect(),
        };
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
        let (d, c, m) = (self.p.d, self.p.c, self.p.m);
        let w2 = self.p.w2_offset();
        let wv = self.slots[w.index()].clone();
        let t_len = (TILE_FLOATS / d).clamp(1, m);
        let tile_bytes =
            (4 * (self.threads + 2) * (2 * t_len * d + BLOCK * d + BLOCK * t_len)) as u64;
        self.meter
            .alloc(tile_bytes + TopS::capacity_bytes(s) as u64);
        self.meter.set_tile(tile_bytes);
        let mut top = TopS::new(s);
        let value_of = |i: u32| -> f32 {
            match wv.indices.binary_search(&i) {
                Ok(q) => wv.values[q],
                Err(_) => 0.0,
            }
        };
        for j0 in (0..m).step_by(t_len) {
            let t = t_len.min(m - j0);
            let (g1, g2) = self.tile_gradient(&wv, j0, t);
            let entries = g1
                .iter()
                .enumerate()
                .map(|(o, &g)| ((j0 * d + o) as u32, g))
                .chain(
                    g2.iter()
                        .enumerate()
                        .map(|(o, &g)| ((w2 + j0 * c + o) as u32, g)),
                );
            match how {
                Selection::Exact => {
                    for (i, g) in entries {
                        top.push(i, value_of(i) - mu * g);
                    }
                }
                Selection::Sketch => {
                    let depth = self.sketch_shape.1;
                    for (i, g) in entries {
                        for r in 0..depth {
                            let (k, sg) = self.sketch_slot(r, i);
                            self.sketch[k] -= sg * mu * g;
                        }
                    }
                }
            }
        }
        if how == Selection::Sketch {
            // The support: the largest virtual initial values plus accumulated updates.
            for i in 0..self.p.signal_len() as u32 {
                top.push(i, self.p.initial_value(i) + self.sketch_query(i));
            }
        }
        self.slots[dst.index()] = top.finish();
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
            let max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + f.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            total += lse - f[p.labels[i] as usize];
        }
        total / p.n as f64
    }

    fn problem(n: usize, d: usize, m: usize, c: usize) -> VectorProblem {
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let labels = (0..n).map(|i| (i * 31 % c) as u8).collect();
        VectorProblem::new(d, m, c, x, labels, 3).unwrap()
    }

    #[test]
    fn support_gradient_matches_finite_differences() {
        let p = Arc::new(problem(37, 5, 4, 3));
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
        assert!((l0 - loss_dense(&p, &dense)).abs() < 1e-6);
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
        // With every entry in the support, thresholding with μ and s = len gives w − μ g.
        let p = Arc::new(problem(50, 6, 5, 3));
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
