//! Vector outputs: the two-block network `f(x) = W2ᵀ relu(W1 x)` with `C` outputs and softmax
//! cross-entropy, held as one sparse vector over `m·d + m·C` entries (`W1` row-major first,
//! entry `j·d + k`; then `W2`, entry `m·d + j·C + c`), `s` nonzeros over both blocks.
//!
//! The contract mirrors [`crate::backend::Backend`]: slots of sparse vectors live in the
//! backend, the residual `R = (softmax(f) − onehot)/n` (`n × C`) stays there, and only scalars
//! cross in the hot loop. Gates are the network's own: unit `j` is on at sample `i` when
//! `x_i · w1_j > 0`. A unit without `W1` entries is off everywhere; with `recruit` its
//! gradient uses the random gate `g_j` instead (as sequential IHT's first steps do), so it can
//! be recruited.
//!
//! Gradients by the chain rule: `∂/∂W1_jk = Σ_i 1[on_ij] x_ik (R_i · W2_j)`,
//! `∂/∂W2_jc = Σ_i relu(x_i·w1_j) R_ic`.

pub mod cpu;

use crate::backend::{BackendInfo, MemoryStats, Slot};
use crate::error::{check_finite, Error, Param, Result};
use crate::sparse::SparseVec;

/// A classification problem with `C` outputs.
#[derive(Clone, Debug)]
pub struct VectorProblem {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub c: usize,
    /// Sample-major `n × d` features.
    pub x: Vec<f32>,
    /// Class of each sample, `< c`.
    pub labels: Vec<u8>,
    /// Seed of the random gates of empty units and of the virtual initial values.
    pub seed: u64,
}

impl VectorProblem {
    pub fn new(
        d: usize,
        m: usize,
        c: usize,
        x: Vec<f32>,
        labels: Vec<u8>,
        seed: u64,
    ) -> Result<Self> {
        let n = labels.len();
        crate::problem::check_sizes(n, d, m)?;
        if c < 2 {
            return Err(Error::invalid(Param::Outputs, "at least two classes"));
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
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= c) {
            return Err(Error::invalid(
                Param::Outputs,
                format!("label {l} is not below the {c} classes"),
            ));
        }
        check_finite("features", &x)?;
        Ok(Self {
            n,
            d,
            m,
            c,
            x,
            labels,
            seed,
        })
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
