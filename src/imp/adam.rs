//! Adam as PyTorch's `torch.optim.Adam` (no weight decay, no amsgrad), masked for pruning.
//!
//! Per weight with gradient `g` at step `t` (1-based, counted from the start of the round):
//! `m ← m + (1−β1)(g − m)`, `v ← β2·v + (1−β2)·g²`,
//! `w ← w − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)` — torch's operation order. A pruned
//! weight and its moments are set to zero instead. The bias corrections are computed on the
//! host in f64 and handed to both backends as f32, so the CPU and the GPU do the same f32
//! operations.

use rayon::prelude::*;

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;
pub const DEFAULT_LR: f32 = 1e-3;

/// The scalars of one Adam update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Step number within the round, from 1.
    pub t: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// What an update kernel needs: `lr / (1−β1ᵗ)`, `√(1−β2ᵗ)`, `1−β1`, `1−β2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub one_minus_b1: f32,
    pub one_minus_b2: f32,
}

impl AdamStep {
    /// Step `t` with the default betas and ε.
    pub fn new(t: u32, lr: f32) -> Self {
        AdamStep {
            t,
            lr,
            beta1: BETA1,
            beta2: BETA2,
            eps: EPS,
        }
    }

    pub fn scalars(&self) -> AdamScalars {
        let t = self.t.max(1) as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        AdamScalars {
            step_size: (self.lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            one_minus_b1: (1.0 - self.beta1 as f64) as f32,
            one_minus_b2: (1.0 - self.beta2 as f64) as f32,
        }
    }
}

/// One masked update of one weight (the GPU's `adam` kernel does the same operations).
#[inline]
pub fn update_one(
    w: &mut f32,
    g: f32,
    m1: &mut f32,
    m2: &mut f32,
    keep: bool,
    s: &AdamScalars,
    step: &AdamStep,
) {
    if !keep {
        *w = 0.0;
        *m1 = 0.0;
        *m2 = 0.0;
        return;
    }
    let a = *m1 + s.one_minus_b1 * (g - *m1);
    let b = *m2 * step.beta2 + s.one_minus_b2 * g * g;
    *m1 = a;
    *m2 = b;
    let denom = b.sqrt() / s.bc2_sqrt + step.eps;
    *w -= s.step_size * a / denom;
}

/// Elements per parallel task of [`update`].
const CHUNK: usize = 1 << 14;

/// The masked update of every weight, in parallel (element-wise: deterministic).
pub fn update(
    w: &mut [f32],
    g: &[f32],
    m1: &mut [f32],
    m2: &mut [f32],
    mask: &[bool],
    step: &AdamStep,
) {
    let s = step.scalars();
    w.par_chunks_mut(CHUNK)
        .zip(m1.par_chunks_mut(CHUNK))
        .zip(m2.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK).zip(mask.par_chunks(CHUNK)))
        .for_each(|(((w, m1), m2), (g, mask))| {
            for i in 0..w.len() {
                update_one(&mut w[i], g[i], &mut m1[i], &mut m2[i], mask[i], &s, step);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.optim.Adam on a scalar: the first step moves by lr·sign(g) (up to ε), and the
    /// moments follow the bias-corrected recurrences.
    #[test]
    fn first_steps_match_the_torch_recurrence() {
        let mut w = [1.0f32, 2.0];
        let mut m1 = [0.0f32; 2];
        let mut m2 = [0.0f32; 2];
        let g = [0.5f32, -3.0];
        update(
            &mut w,
            &g,
            &mut m1,
            &mut m2,
            &[true, false],
            &AdamStep::new(1, 0.1),
        );
        assert!((w[0] - 0.9).abs() < 1e-6, "{}", w[0]);
        assert_eq!((w[1], m1[1], m2[1]), (0.0, 0.0, 0.0));
        // Step 2 with the same gradient, in f64 from the definition.
        update(
            &mut w,
            &g,
            &mut m1,
            &mut m2,
            &[true, false],
            &AdamStep::new(2, 0.1),
        );
        let (b1, b2, g0) = (0.9f64, 0.999f64, 0.5f64);
        let m = (1.0 - b1) * g0 * (1.0 + b1);
        let v = (1.0 - b2) * g0 * g0 * (1.0 + b2);
        let mhat = m / (1.0 - b1 * b1);
        let vhat = v / (1.0 - b2 * b2);
        let expect = 0.9 - 0.1 * mhat / (vhat.sqrt() + 1e-8);
        assert!((w[0] as f64 - expect).abs() < 1e-6, "{} vs {expect}", w[0]);
    }
}
