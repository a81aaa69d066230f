//! Floating-point work and compulsory memory traffic per call, from the problem's shape: the
//! numerators of the achieved GFLOP/s and GB/s.

use super::BenchProblem;

/// Floating-point work and compulsory memory traffic of one call, from the problem's shape.
/// Features are generated on the fly and not counted as traffic.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            flops: self.flops + o.flops,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::ops::Mul<f64> for Work {
    type Output = Work;
    fn mul(self, k: f64) -> Work {
        Work {
            flops: self.flops * k,
            bytes: self.bytes * k,
        }
    }
}

/// Per-call work models for a sequential-gate step (`s` gate entries as well as `s` weights).
pub struct WorkModel {
    pub n: f64,
    pub d: f64,
    pub s: f64,
    pub active: f64,
}

impl WorkModel {
    pub fn new(bp: &BenchProblem) -> Self {
        WorkModel {
            n: bp.size.n as f64,
            d: bp.size.d as f64,
            s: bp.size.s as f64,
            active: bp.active_neurons() as f64,
        }
    }
    /// `A_S v − y`: a gate dot and a value dot per (sample, support entry).
    pub fn forward(&self) -> Work {
        Work {
            flops: 4.0 * self.n * self.s,
            bytes: 8.0 * self.n + 16.0 * self.s,
        }
    }
    /// `A_Sᵀ r` then `‖A_S g‖²`.
    pub fn step_size(&self) -> Work {
        self.forward() * 2.0
    }
    /// Gradient (when recomputed), axpy, trial forward.
    pub fn trial(&self) -> Work {
        self.forward() * 2.0
    }
    /// `X_tileᵀ (D ∘ r)` for every active neuron, top-s over the candidates. The gates of a
    /// sequential step are not counted: they are the support passes' cached mask (the GPU
    /// reuses it; with other gates the dense pass evaluates them, uncounted here).
    pub fn threshold(&self) -> Work {
        Work {
            flops: 2.0 * self.n * self.d * self.active,
            bytes: 4.0 * self.n + 8.0 * self.active * self.d + 16.0 * self.s,
        }
    }
}
