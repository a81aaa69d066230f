//! The row path of the CPU support passes: each block of active samples gets its feature rows
//! (borrowed from a dense matrix, or generated from the grid) and the gates of every neuron of
//! the support evaluated from them, pass by pass. It serves features beyond the cache budget,
//! where `columns.rs` cannot hold them feature-major, and is tested against the same oracle.

use super::*;

/// Read access to the features: a dense matrix (given or cached) or generated on the fly.
#[derive(Clone, Copy)]
pub(super) enum Feat<'a> {
    Dense(&'a [f32], usize),
    Grid(&'a GridFourier),
}

impl Feat<'_> {
    #[inline]
    pub(super) fn row(&self, i: usize, out: &mut [f32]) {
        match *self {
            Feat::Dense(x, d) => out.copy_from_slice(&x[i * d..(i + 1) * d]),
            Feat::Grid(g) => g.fill_row(i, out),
        }
    }
}

impl CpuBackend {
    /// Row access for the row path.
    pub(super) fn feat(&self) -> Feat<'_> {
        match &self.problem.features {
            Features::Dense(x) => Feat::Dense(x, self.problem.d),
            Features::Grid(g) => Feat::Grid(g),
        }
    }

    /// Visits the active samples `blk` (indices into the batch): computes each sample's feature
    /// row and the gates of every run, then calls `op(index, row, open)`.
    fn visit_block(
        &self,
        plan: &Plan,
        blk: Range<usize>,
        rows: &mut Vec<f32>,
        open: &mut Vec<bool>,
        gate: &mut Vec<f32>,
        mut op: impl FnMut(usize, &[f32], &[bool]),
    ) {
        let d = self.problem.d;
        let nr = plan.runs.len();
        let batch = self.batch.as_deref();
        let b_len = blk.len();
        let feat = self.feat();
        // Rows of the block: borrowed from a dense matrix, or generated into `rows`.
        if let Feat::Grid(g) = feat {
            rows.resize(b_len * d, 0.0);
            for b in 0..b_len {
                g.fill_row(
                    Self::sample(batch, blk.start + b),
                    &mut rows[b * d..(b + 1) * d],
                );
            }
        }
        let row = |b: usize| -> &[f32] {
            match feat {
                Feat::Dense(x, _) => {
                    let i = Self::sample(batch, blk.start + b);
                    &x[i * d..(i + 1) * d]
                }
                Feat::Grid(_) => &rows[b * d..(b + 1) * d],
            }
        };
        open.clear();
        open.resize(b_len * nr, false);
        match &self.gates {
            Gates::Open => open.fill(true),
            Gates::Weights(h) => {
                for b in 0..b_len {
                    let x = row(b);
                    for (r, run) in plan.runs.iter().enumerate() {
                        let mut pre = 0f64;
                        for p in run.gate.clone() {
                            pre += x[plan.gate_cols[p] as usize] as f64 * h.values[p] as f64;
                        }
                        open[b * nr + r] = pre > 0.0;
                    }
                }
            }
            Gates::Random => {
                let seed = self.problem.gate_seed;
                gate.resize(d, 0.0);
                for (r, run) in plan.runs.iter().enumerate() {
                    rng::gate_vector(seed, run.neuron, gate);
                    for b in 0..b_len {
                        open[b * nr + r] = dot(row(b), gate) > 0.0;
                    }
                }
            }
        }
        for b in 0..b_len {
            op(blk.start + b, row(b), &open[b * nr..(b + 1) * nr]);
        }
    }

    /// [`Self::visit_block`] over the samples `part` (active positions), a block at a time,
    /// with one set of scratch buffers.
    fn visit_part(
        &self,
        plan: &Plan,
        part: Range<usize>,
        mut op: impl FnMut(usize, &[f32], &[bool]),
    ) {
        let (mut rows, mut open, mut gate) = (Vec::new(), Vec::new(), Vec::new());
        for blk in part.clone().step_by(BLOCK) {
            let range = blk..(blk + BLOCK).min(part.end);
            self.visit_block(plan, range, &mut rows, &mut open, &mut gate, &mut op);
        }
    }

    /// The row path of [`CpuBackend::apply`].
    pub(super) fn apply_rows(&self, v: &SparseVec, subtract_y: bool, out: &mut [f32]) -> f64 {
        let plan = self.plan(v);
        let batch = self.batch.as_deref();
        let y = self.targets();
        let len = out.len();
        let sums: Vec<f64> = out
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(blk, chunk)| {
                let start = blk * BLOCK;
                let mut acc = 0f64;
                self.visit_part(&plan, start..(start + BLOCK).min(len), |idx, x, open| {
                    let pred = gated_sum(&plan, x, open, &v.values);
                    let i = Self::sample(batch, idx);
                    let o = if subtract_y { pred - y[i] as f64 } else { pred };
                    chunk[idx - start] = o as f32;
                    acc += o * o;
                });
                acc
            })
            .collect();
        sums.iter().sum() // in block order: the same rounding on every run
    }

    /// The row path of [`CpuBackend::apply_t`].
    pub(super) fn apply_t_rows(&self, v: &SparseVec, r: &[f32]) -> Vec<f32> {
        let g = self.apply_t_rows64(v, r);
        g.into_iter().map(|x| x as f32).collect()
    }

    /// [`Self::apply_t_rows`] before rounding to f32.
    pub(super) fn apply_t_rows64(&self, v: &SparseVec, r: &[f32]) -> Vec<f64> {
        let plan = self.plan(v);
        let len = v.len();
        let partials: Vec<Vec<f64>> = parts(r.len(), self.threads)
            .into_par_iter()
            .map(|part| {
                let mut acc = vec![0f64; len];
                self.visit_part(&plan, part, |idx, x, open| {
                    add_gated(&plan, x, open, r[idx] as f64, &mut acc)
                });
                acc
            })
            .collect();
        sum_in_order(partials, len)
    }

    /// The row path of [`CpuBackend::normal_cols`]: each sample's `u_i = (A_S g)_i` from its
    /// row and gates, then `h += u_i ·` (its gated row on the support) while the row is at
    /// hand, so a refinement step generates the features once instead of three times.
    pub(super) fn normal_rows(&self, g: &SparseVec, u: &mut [f32]) -> (Vec<f64>, f64) {
        let plan = self.plan(g);
        let s = g.len();
        let ps = parts(u.len(), self.threads);
        let chunks = split_by(u, &ps);
        let partials: Vec<(Vec<f64>, f64)> = chunks
            .into_par_iter()
            .zip(ps)
            .map(|(chunk, part)| {
                let mut acc = vec![0f64; s];
                let mut sq = 0f64;
                let start = part.start;
                self.visit_part(&plan, part, |idx, x, open| {
                    let pred = gated_sum(&plan, x, open, &g.values);
                    chunk[idx - start] = pred as f32;
                    sq += pred * pred;
                    add_gated(&plan, x, open, pred, &mut acc);
                });
                (acc, sq)
            })
            .collect();
        let sq = partials.iter().map(|p| p.1).sum();
        let h = sum_in_order(partials.into_iter().map(|p| p.0).collect(), s);
        (h, sq)
    }
}

/// `Σ vals[p] · x[col p]` over the entries of every open run, in entry order (f64).
#[inline]
fn gated_sum(plan: &Plan, x: &[f32], open: &[bool], vals: &[f32]) -> f64 {
    let mut sum = 0f64;
    for (run, &o) in plan.runs.iter().zip(open) {
        if o {
            for p in run.entries.clone() {
                sum += x[plan.cols[p] as usize] as f64 * vals[p] as f64;
            }
        }
    }
    sum
}

/// `acc[p] += c · x[col p]` for the entries of every open run (nothing when `c` is 0).
#[inline]
fn add_gated(plan: &Plan, x: &[f32], open: &[bool], c: f64, acc: &mut [f64]) {
    if c == 0.0 {
        return;
    }
    for (run, &o) in plan.runs.iter().zip(open) {
        if o {
            for p in run.entries.clone() {
                acc[p] += c * x[plan.cols[p] as usize] as f64;
            }
        }
    }
}
