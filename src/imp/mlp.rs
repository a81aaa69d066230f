//! The dense network IMP trains, `f(x) = Vᵀ relu(U x)`, behind one trait ([`DenseMlp`]) with
//! a CPU ([`super::cpu::CpuMlp`]) and a GPU ([`super::gpu::GpuMlp`]) implementation.
//!
//! Layout shared by both: the weights are one vector `W = [U | V]`, `U` row-major `m×d`
//! (flat index `j·d + k`, as IHT's sparse weights), `V` row-major `m×C` from offset `m·d`;
//! gradients, Adam moments and the mask have the same layout. A pruned weight is held at zero
//! (its moments too) by the masked Adam update.
//!
//! Loss conventions (PyTorch's): MSE is the mean over samples and outputs of `(o − y)²`;
//! cross-entropy the mean over samples of `−log softmax(o)_label`. Per sample, the loss is
//! `Σ_c (o_c − y_c)² / C` (MSE) or `lse(o) − o_label` (CE), so the mean loss over a batch is the
//! sum of per-sample losses over the batch size, and `dL/do` is `2(o − y)/(N·C)` or
//! `(softmax(o) − e_label)/N` for a batch of `N` samples.

use crate::backend::{BackendInfo, MemoryStats};
use crate::error::{check_finite, Error, Param, Result};
use crate::problem::Features;

pub use super::adam::AdamStep;

/// Sizes of a dense network and its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Samples in the data.
    pub n: usize,
    /// Inputs (features per sample).
    pub d: usize,
    /// Hidden neurons.
    pub m: usize,
    /// Outputs per sample.
    pub c: usize,
}

impl MlpShape {
    pub fn u_len(&self) -> usize {
        self.m * self.d
    }
    pub fn v_len(&self) -> usize {
        self.m * self.c
    }
    /// All weights, `m·d + m·C`.
    pub fn weights(&self) -> usize {
        self.u_len() + self.v_len()
    }
}

/// What the outputs are fitted to.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Regression: `n×C` values (row-major), MSE loss.
    Values(Vec<f32>),
    /// Classification: `n` labels in `0..C`, softmax cross-entropy.
    Labels(Vec<u32>),
    /// Prediction only: asking for a loss is an error.
    None,
}

impl Targets {
    /// Checks the targets against `n` samples and `c` outputs.
    pub fn check(&self, n: usize, c: usize) -> Result<()> {
        match self {
            Targets::Values(y) => {
                if y.len() != n * c {
                    return Err(Error::invalid(
                        Param::Outputs,
                        format!("{} target values for {n} samples × {c} outputs", y.len()),
                    ));
                }
                check_finite("targets", y)
            }
            Targets::Labels(l) => {
                if l.len() != n {
                    return Err(Error::invalid(
                        Param::Outputs,
                        format!("{} labels for {n} samples", l.len()),
                    ));
                }
                if c < 2 {
                    return Err(Error::invalid(
                        Param::Outputs,
                        "classification needs at least 2 classes",
                    ));
                }
                match l.iter().position(|&v| v as usize >= c) {
                    Some(i) => Err(Error::invalid(
                        Param::Outputs,
                        format!("label {} of sample {i} is not below {c} classes", l[i]),
                    )),
                    None => Ok(()),
                }
            }
            Targets::None => Ok(()),
        }
    }

    /// `1/(N·C)` (MSE) or `1/N` (CE): the scale of `dL/do` for a batch of `batch` samples.
    pub fn inv_norm(&self, batch: usize, c: usize) -> f32 {
        match self {
            Targets::Labels(_) => (1.0 / batch as f64) as f32,
            _ => (1.0 / (batch as f64 * c as f64)) as f32,
        }
    }
}

/// The data a network is trained or evaluated on: features (as IHT sees them) and targets.
#[derive(Clone, Copy, Debug)]
pub struct MlpData<'a> {
    pub features: &'a Features,
    pub n: usize,
    pub d: usize,
    pub targets: &'a Targets,
}

impl crate::samples::SampleSource for MlpData<'_> {
    fn samples(&self) -> usize {
        self.n
    }

    fn features(&self) -> usize {
        self.d
    }

    fn read_rows(&self, range: std::ops::Range<usize>, out: &mut [f32]) -> Result<()> {
        crate::samples::check_read(self, &range, out.len(), self.d)?;
        crate::samples::read_feature_rows(self.features, self.d, range, out);
        Ok(())
    }

    fn targets_per_sample(&self) -> usize {
        match self.targets {
            Targets::Values(y) => y.len() / self.n.max(1),
            Targets::Labels(_) => 1,
            Targets::None => 0,
        }
    }

    /// Values as they are; class labels as floats (what the GPU kernels read).
    fn read_targets(&self, range: std::ops::Range<usize>, out: &mut [f32]) -> Result<()> {
        let t = self.targets_per_sample();
        crate::samples::check_read(self, &range, out.len(), t)?;
        match self.targets {
            Targets::Values(y) => out.copy_from_slice(&y[range.start * t..range.end * t]),
            Targets::Labels(l) => {
                for (o, &v) in out.iter_mut().zip(&l[range]) {
                    *o = v as f32;
                }
            }
            Targets::None => {}
        }
        Ok(())
    }
}

impl MlpData<'_> {
    /// Fills the `d` features of sample `i`.
    #[inline]
    pub fn fill_row(&self, i: usize, out: &mut [f32]) {
        match self.features {
            Features::Dense(x) => out.copy_from_slice(&x[i * self.d..(i + 1) * self.d]),
            Features::Grid(g) => g.fill_row(i, out),
        }
    }

    pub(crate) fn check(&self, m: usize, c: usize) -> Result<()> {
        crate::problem::check_sizes(self.n, self.d, m)?;
        if c == 0 {
            return Err(Error::invalid(
                Param::Outputs,
                "the network needs an output",
            ));
        }
        match self.features {
            Features::Dense(x) if x.len() != self.n * self.d => {
                return Err(Error::invalid(Param::Inputs, "feature matrix is not n×d"))
            }
            Features::Grid(g) if g.n() != self.n || 2 * g.half() != self.d => {
                return Err(Error::invalid(
                    Param::Inputs,
                    "grid features do not match n and d",
                ))
            }
            _ => {}
        }
        self.targets.check(self.n, c)
    }
}

/// Checks a batch of sample indices against `n` samples.
pub(crate) fn check_batch(batch: Option<&[u32]>, n: usize) -> Result<usize> {
    match batch {
        None => Ok(n),
        Some([]) => Err(Error::invalid(Param::BatchSize, "an empty batch")),
        Some(b) => match b.iter().find(|&&i| i as usize >= n) {
            Some(i) => Err(Error::invalid(
                Param::Samples,
                format!("sample {i} is out of range ({n} samples)"),
            )),
            None => Ok(b.len()),
        },
    }
}

/// The loss and `dL/do` of one sample. `o` holds the outputs and is overwritten by `dL/do`;
/// returns the per-sample loss (see the module docs). The GPU's `head` kernel does the same
/// operations in the same order.
#[inline]
pub(crate) fn head_sample(o: &mut [f32], targets: &Targets, sample: usize, inv_norm: f32) -> f32 {
    let c = o.len();
    match targets {
        Targets::Values(y) => {
            let mut loss = 0f32;
            for (oc, &yc) in o.iter_mut().zip(&y[sample * c..(sample + 1) * c]) {
                let e = *oc - yc;
                loss += e * e;
                *oc = 2.0 * e * inv_norm;
            }
            loss / c as f32
        }
        Targets::Labels(l) => {
            let mx = o.iter().fold(f32::MIN, |a, &b| a.max(b));
            let se: f32 = o.iter().map(|&v| (v - mx).exp()).sum();
            let lse = mx + se.ln();
            let label = l[sample] as usize;
            let loss = lse - o[label];
            for (cc, oc) in o.iter_mut().enumerate() {
                let t = if cc == label { 1.0 } else { 0.0 };
                *oc = ((*oc - lse).exp() - t) * inv_norm;
            }
            loss
        }
        Targets::None => 0.0,
    }
}

/// The compute of one dense network: weights, masks, gradients and Adam moments live in the
/// implementation (on the device for the GPU) for the whole fit.
pub trait DenseMlp {
    fn shape(&self) -> MlpShape;
    fn info(&self) -> BackendInfo;
    /// Sets `U` (`m×d`) and `V` (`m×C`). Pruned entries should be zero (the next Adam step
    /// zeroes them anyway).
    fn set_weights(&mut self, u: &[f32], v: &[f32]) -> Result<()>;
    /// Which weights train (`true`) and which are pruned (held at zero).
    fn set_mask(&mut self, u: &[bool], v: &[bool]) -> Result<()>;
    /// Reads `U` and `V` back.
    fn weights(&mut self) -> Result<(Vec<f32>, Vec<f32>)>;
    /// Reads the gradients of the last [`DenseMlp::forward_backward`] back (tests).
    fn gradients(&mut self) -> Result<(Vec<f32>, Vec<f32>)>;
    /// The gradient of the mean loss over `batch` (`None`: all samples) at the current
    /// weights, replacing the previous gradient. Its loss is read by [`DenseMlp::last_loss`].
    fn forward_backward(&mut self, batch: Option<&[u32]>) -> Result<()>;
    /// The summed per-sample loss of the last [`DenseMlp::forward_backward`] (a readback on
    /// the GPU, so the training loop asks only when it needs the number).
    fn last_loss(&mut self) -> Result<f64>;
    /// The summed per-sample loss over `batch` at the current weights (forward only).
    fn loss(&mut self, batch: Option<&[u32]>) -> Result<f64>;
    /// Zeroes both Adam moments (the start of an IMP round).
    fn reset_adam(&mut self) -> Result<()>;
    /// One masked Adam update from the current gradient.
    fn adam_step(&mut self, step: &AdamStep) -> Result<()>;
    /// Outputs `|batch|×C` (row-major) at the current weights.
    fn predict(&mut self, batch: Option<&[u32]>) -> Result<Vec<f32>>;
    /// Bytes held (device buffers on the GPU, the network's arrays on the CPU).
    fn memory(&self) -> MemoryStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_gradient_is_softmax_minus_one_hot() {
        let t = Targets::Labels(vec![2]);
        let mut o = vec![1.0f32, -0.5, 2.0];
        let loss = head_sample(&mut o, &t, 0, 1.0);
        let z: f64 = [1.0f64, -0.5, 2.0].iter().map(|v| v.exp()).sum();
        assert!((loss as f64 - (z.ln() - 2.0)).abs() < 1e-6);
        let p2 = 2f64.exp() / z;
        assert!((o[2] as f64 - (p2 - 1.0)).abs() < 1e-6);
        assert!(o.iter().map(|&v| v as f64).sum::<f64>().abs() < 1e-6);
    }

    #[test]
    fn targets_are_checked() {
        assert!(Targets::Labels(vec![0, 3]).check(2, 3).is_err());
        assert!(Targets::Labels(vec![0, 2]).check(2, 3).is_ok());
        assert!(Targets::Values(vec![0.0; 5]).check(2, 3).is_err());
        assert!(Targets::Values(vec![f32::NAN; 2]).check(2, 1).is_err());
        assert!(check_batch(Some(&[0, 5]), 5).is_err());
        assert!(check_batch(Some(&[]), 5).is_err());
        assert_eq!(check_batch(None, 5).unwrap(), 5);
    }
}
