//! Vector outputs: the two-block network `f(x) = W2ᵀ relu(W1 x)` with `C` outputs, trained on
//! softmax cross-entropy (classes) or squared error (real targets), held as one sparse vector over `m·d + m·C` entries (`W1` row-major first,
//! entry `j·d + k`; then `W2`, entry `m·d + j·C + c`), `s` nonzeros over both blocks.
//!
//! The contract mirrors [`crate::backend::Backend`]: slots of sparse vectors live in the
//! backend, the residual `R = ∂loss/∂f` (`n × C`: `(softmax(f) − onehot)/n` or `2(f − y)/n`)
//! stays there, and only scalars
//! cross in the hot loop. Gates are the network's own: unit `j` is on at sample `i` when
//! `x_i · w1_j > 0`. A unit without `W1` entries is off everywhere; with `recruit` its
//! gradient uses the random gate `g_j` instead (as sequential IHT's first steps do), so it can
//! be recruited.
//!
//! Gradients by the chain rule: `∂/∂W1_jk = Σ_i 1[on_ij] x_ik (R_i · W2_j)`,
//! `∂/∂W2_jc = Σ_i relu(x_i·w1_j) R_ic`.

pub mod cpu;
pub mod gpu;

use crate::backend::gpu::GpuContext;
use crate::backend::{BackendChoice, BackendInfo, MemoryStats, Slot};
use crate::error::{check_finite, Error, Param, Result};
use crate::sparse::{SparseVec, TopS};
use std::sync::Arc;

/// What the `C` outputs are fitted to, and so the loss.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// The class of each sample (`< C`); mean softmax cross-entropy.
    Classes(Vec<u8>),
    /// Sample-major `n × C` real targets; mean squared error `Σ_i ‖f(x_i) − y_i‖² / n`.
    Values(Vec<f32>),
}

impl Targets {
    fn samples(&self, c: usize) -> usize {
        match self {
            Targets::Classes(l) => l.len(),
            Targets::Values(y) => y.len() / c.max(1),
        }
    }
}

/// A problem with `C` outputs.
#[derive(Clone, Debug)]
pub struct VectorProblem {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub c: usize,
    /// Sample-major `n × d` features.
    pub x: Vec<f32>,
    pub targets: Targets,
    /// Seed of the random gates of empty units and of the virtual initial values.
    pub seed: u64,
}

impl VectorProblem {
    pub fn new(
        d: usize,
        m: usize,
        c: usize,
        x: Vec<f32>,
        targets: Targets,
        seed: u64,
    ) -> Result<Self> {
        let n = targets.samples(c);
        crate::problem::check_sizes(n, d, m)?;
        let least = match targets {
            Targets::Classes(_) => 2,
            Targets::Values(_) => 1,
        };
        if c < least {
            return Err(Error::invalid(
                Param::Outputs,
                format!("need at least {least} outputs, got {c}"),
            ));
        }
        if (m as u64) * (d as u64 + c as u64) > u32::MAX as u64 {
            return Err(Error::invalid(
                Param::Neurons,
                "m·(d + C) exceeds the 32-bit index space",
            ));
        }
        if x.len() != n * d {
            return Err(Error::invalid(Param::Inputs, "feature matrix is not n×d"));
        }
        match &targets {
            Targets::Classes(labels) => {
                if let Some(&l) = labels.iter().find(|&&l| l as usize >= c) {
                    return Err(Error::invalid(
                        Param::Outputs,
                        format!("label {l} is not below the {c} classes"),
                    ));
                }
            }
            Targets::Values(y) => {
                if y.len() != n * c {
                    return Err(Error::invalid(Param::Outputs, "targets are not n×C"));
                }
                check_finite("targets", y)?;
            }
        }
        check_finite("features", &x)?;
        Ok(Self {
            n,
            d,
            m,
            c,
            x,
            targets,
            seed,
        })
    }

    /// The loss of score rows `f` (`C` each) of the samples `rows` (indices into the problem),
    /// and its residual `R = ∂loss/∂f` into `resid`.
    pub fn loss_residual(&self, f: &[f32], rows: &[u32], resid: &mut [f32]) -> f64 {
        match &self.targets {
            Targets::Classes(l) => {
                let labels: Vec<u8> = rows.iter().map(|&i| l[i as usize]).collect();
                softmax_residual(f, &labels, self.c, rows.len(), resid)
            }
            Targets::Values(y) => squared_residual(f, y, rows, self.c, resid),
        }
    }

    /// `m·(d + C)`: the length of the signal.
    pub fn signal_len(&self) -> usize {
        self.m * (self.d + self.c)
    }

    /// Where `W2` starts.
    pub fn w2_offset(&self) -> usize {
        self.m * self.d
    }

    /// The virtual initial value of entry `i`: uniform in `±1/√fan_in` (PyTorch's default for a
    /// linear layer without bias: fan-in `d` for `W1`, `m` for `W2`), from a hash of
    /// `(seed, i)`; regenerated, never stored.
    pub fn initial_value(&self, i: u32) -> f32 {
        let fan_in = if (i as usize) < self.w2_offset() {
            self.d
        } else {
            self.m
        };
        let key = crate::rng::gate_key(self.seed ^ 0x1f83_d9ab_fb41_bd6b, i);
        let u = (crate::rng::hash32(key) >> 8) as f32 * (1.0 / 16_777_216.0);
        (2.0 * u - 1.0) / (fan_in as f32).sqrt()
    }
}

/// How the dense pass turns gradients into the next support.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Selection {
    /// IHT: `top_s(w − μ ∇)`.
    Exact,
    /// The paper's: every step adds `−μ ∇` of all entries to a count-sketch; the next support
    /// is `top_s(w0 + sketch)` with the virtual initial values `w0`.
    Sketch,
}

/// Count-sketch size for `s` nonzeros out of `len`: width about `s·ln(len/s)`, depth 3.
pub fn sketch_shape(s: usize, len: usize) -> (usize, usize) {
    let ratio = (len as f64 / s.max(1) as f64).max(std::f64::consts::E);
    ((s as f64 * ratio.ln()).ceil() as usize + 1, 3)
}

/// The host side of the dense pass, shared by the backends: each tile's gradients (`G1`
/// `t×d`, `G2` `t×C`) go into the running top-`s` of `w − μ G` ([`Selection::Exact`]) or into
/// the count-sketch of accumulated updates ([`Selection::Sketch`], which keeps its state
/// between steps).
pub struct DenseSelect {
    sketch: Vec<f32>,
    shape: (usize, usize),
    seed: u64,
}

impl DenseSelect {
    pub fn new(p: &VectorProblem, s: usize) -> Self {
        let (w, depth) = sketch_shape(s, p.signal_len());
        Self {
            sketch: vec![0.0; w * depth],
            shape: (w, depth),
            seed: p.seed,
        }
    }

    /// Bytes held (the sketch).
    pub fn bytes(&self) -> usize {
        4 * self.sketch.len()
    }

    fn slot(&self, row: usize, i: u32) -> (usize, f32) {
        let (w, _) = self.shape;
        let h = crate::rng::hash32(crate::rng::gate_key(self.seed ^ 0x5ca1_ab1e, i) ^ row as u32);
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        (row * w + (h >> 1) as usize % w, sign)
    }

    fn query(&self, i: u32) -> f32 {
        let depth = self.shape.1;
        let mut v: Vec<f32> = (0..depth)
            .map(|r| {
                let (k, sg) = self.slot(r, i);
                sg * self.sketch[k]
            })
            .collect();
        v.sort_by(f32::total_cmp);
        v[depth / 2]
    }

    /// Adds one tile of units `j0..j0+t`.
    #[allow(clippy::too_many_arguments)]
    pub fn push_tile(
        &mut self,
        p: &VectorProblem,
        top: &mut TopS,
        how: Selection,
        w: &SparseVec,
        mu: f32,
        j0: usize,
        g1: &[f32],
        g2: &[f32],
    ) {
        let (d, c) = (p.d, p.c);
        let w2 = p.w2_offset();
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
                    let v = match w.indices.binary_search(&i) {
                        Ok(q) => w.values[q],
                        Err(_) => 0.0,
                    };
                    top.push(i, v - mu * g);
                }
            }
            Selection::Sketch => {
                for (i, g) in entries {
                    for r in 0..self.shape.1 {
                        let (k, sg) = self.slot(r, i);
                        self.sketch[k] -= sg * mu * g;
                    }
                }
            }
        }
    }

    /// The selected support after the last tile.
    pub fn finish(&self, p: &VectorProblem, mut top: TopS, how: Selection) -> SparseVec {
        if how == Selection::Sketch {
            // The largest virtual initial values plus accumulated updates.
            for i in 0..p.signal_len() as u32 {
                top.push(i, p.initial_value(i) + self.query(i));
            }
        }
        top.finish()
    }
}

/// The dense rows of a tile of units `j0..j0+t` as the dense pass uses them: the gate rows
/// (`t×d`: each unit's `W1` row, or its random gate when it has no `W1` entry and `recruit`),
/// whether each has `W1` entries, and the `W2` rows (`t×C`).
pub fn tile_rows(
    p: &VectorProblem,
    w: &SparseVec,
    j0: usize,
    t: usize,
    recruit: bool,
) -> (Vec<f32>, Vec<bool>, Vec<f32>) {
    let (d, c) = (p.d, p.c);
    let w2 = p.w2_offset();
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
    if recruit {
        for u in 0..t {
            if !has_w1[u] {
                crate::rng::gate_vector(p.seed, (j0 + u) as u32, &mut gate[u * d..(u + 1) * d]);
            }
        }
    }
    (gate, has_w1, w2t)
}

/// Checks a weight vector before a backend takes it.
pub fn check_weights(p: &VectorProblem, w: &SparseVec) -> Result<()> {
    if w.indices
        .last()
        .is_some_and(|&i| i as usize >= p.signal_len())
        || w.indices.windows(2).any(|q| q[0] >= q[1])
        || w.indices.len() != w.values.len()
    {
        return Err(Error::invalid(
            Param::Model,
            "indices must increase and stay below m·(d + C)",
        ));
    }
    check_finite("weights", &w.values)
}

/// Checks a minibatch of sample indices.
pub fn check_batch(p: &VectorProblem, batch: Option<&[u32]>) -> Result<()> {
    if let Some(b) = batch {
        if b.is_empty() || b.iter().any(|&i| i as usize >= p.n) {
            return Err(Error::invalid(
                Param::BatchSize,
                "empty batch or sample out of range",
            ));
        }
    }
    Ok(())
}

/// The operations of the classifier's IHT step on a backend.
pub trait VectorBackend {
    fn info(&self) -> BackendInfo;
    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()>;
    fn read(&mut self, slot: Slot) -> Result<SparseVec>;
    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()>;
    /// Restricts every pass to these samples; `None` = all.
    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()>;
    /// Mean cross-entropy of `v` over the active samples; its residual becomes current.
    fn forward(&mut self, v: Slot) -> Result<f64>;
    /// The gradient on the support of `v` (current residual) into `g`; returns `‖g‖²`.
    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64>;
    /// `dst = v − μ g` and its mean cross-entropy; its residual is kept for
    /// [`VectorBackend::accept_trial`].
    fn trial(&mut self, v: Slot, g: Slot, dst: Slot, mu: f32) -> Result<f64>;
    fn accept_trial(&mut self) -> Result<()>;
    /// The dense pass over all `m·(d + C)` entries with the current residual, in tiles of
    /// units, and the top-`s` selection into `dst` (see [`Selection`]).
    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot, how: Selection) -> Result<()>;
    /// Scores `f(x)` of every sample, `n × C`.
    fn predict(&mut self, v: Slot) -> Result<Vec<f32>>;
    fn memory(&self) -> MemoryStats;
}

/// The vector-output backend the user asked for (`auto`: a real GPU if there is one, else
/// the CPU). `recruit`: units without `W1` entries use random gates in the dense pass (spinr)
/// or stay off (the paper's).
pub fn create(
    choice: BackendChoice,
    adapter: Option<&str>,
    p: Arc<VectorProblem>,
    s: usize,
    recruit: bool,
) -> Result<Box<dyn VectorBackend>> {
    let on_gpu = |ctx| -> Result<Box<dyn VectorBackend>> {
        let mut b = gpu::GpuVector::new(ctx, p.clone(), s)?;
        b.recruit = recruit;
        Ok(Box::new(b))
    };
    let ctx = match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => Some(GpuContext::new(adapter, false)?),
        BackendChoice::Auto => GpuContext::new(adapter, true).ok(),
    };
    match ctx {
        Some(ctx) => on_gpu(ctx),
        None => {
            let mut b = cpu::CpuVector::new(p.clone(), s)?;
            b.recruit = recruit;
            Ok(Box::new(b))
        }
    }
}

/// Mean squared error `Σ_i ‖f_i − y_i‖² / n` and `R = 2(f − y)/n` into `resid`.
pub fn squared_residual(f: &[f32], y: &[f32], rows: &[u32], c: usize, resid: &mut [f32]) -> f64 {
    let n = rows.len();
    let mut loss = 0f64;
    for ((fi, &i), r) in f.chunks(c).zip(rows).zip(resid.chunks_mut(c)) {
        let yi = &y[i as usize * c..(i as usize + 1) * c];
        for ((rk, &fk), &yk) in r.iter_mut().zip(fi).zip(yi) {
            let e = fk as f64 - yk as f64;
            loss += e * e;
            *rk = (2.0 * e / n as f64) as f32;
        }
    }
    loss / n as f64
}

/// Mean softmax cross-entropy of score rows and `R = (softmax − onehot)/n` into `resid`.
pub fn softmax_residual(
    scores: &[f32],
    labels: &[u8],
    c: usize,
    n: usize,
    resid: &mut [f32],
) -> f64 {
    let mut loss = 0f64;
    for ((f, &l), r) in scores.chunks(c).zip(labels).zip(resid.chunks_mut(c)) {
        let max = f.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = f.iter().map(|&v| (v as f64 - max).exp()).sum();
        loss += max + sum.ln() - f[l as usize] as f64;
        for (k, (rk, &fk)) in r.iter_mut().zip(f).enumerate() {
            let p = (fk as f64 - max).exp() / sum;
            *rk = ((p - (k == l as usize) as u8 as f64) / n as f64) as f32;
        }
    }
    loss / n as f64
}
