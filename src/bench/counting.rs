//! A backend wrapper that counts the calls of an IHT step, to turn per-call work models into
//! the step's work.

use crate::backend::{Backend, GateSource, RefineStep, Slot, StepRule};
use crate::error::Result;
use crate::sparse::SparseVec;

/// Counts the calls a step makes, to turn per-call models into per-step work.
#[derive(Default, Debug, Clone, Copy)]
pub struct CallCounts {
    pub forward: usize,
    pub step_size: usize,
    pub trial: usize,
    pub threshold: usize,
}

/// A backend wrapper that counts calls (the step's work = Σ calls × per-call models).
pub struct Counting<'a> {
    pub inner: &'a mut dyn Backend,
    pub counts: CallCounts,
}

impl Counting<'_> {
    /// A refinement's records as the work they replace: a step is a trial with its gradient,
    /// a normalised step a step size too (every exact step, the first Armijo one without μ).
    fn count_refine(&mut self, rule: StepRule, recs: &[RefineStep]) {
        self.counts.trial += recs.len();
        self.counts.step_size += match rule {
            StepRule::Exact => recs.len(),
            StepRule::Armijo(None) => usize::from(!recs.is_empty()),
            StepRule::Armijo(Some(_)) => 0,
        };
    }
}

impl Backend for Counting<'_> {
    fn info(&self) -> crate::backend::BackendInfo {
        self.inner.info()
    }
    fn signal_len(&self) -> usize {
        self.inner.signal_len()
    }
    fn prune(&mut self, src: Slot, s: usize, dst: Slot) -> Result<()> {
        self.inner.prune(src, s, dst)
    }
    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()> {
        self.inner.load(slot, w)
    }
    fn read(&mut self, slot: Slot) -> Result<SparseVec> {
        self.inner.read(slot)
    }
    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()> {
        self.inner.copy(dst, src)
    }
    fn set_gates(&mut self, gates: GateSource) -> Result<()> {
        self.inner.set_gates(gates)
    }
    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()> {
        self.inner.set_batch(batch)
    }
    fn arrange(&mut self, order: &[u32]) -> Result<()> {
        self.inner.arrange(order)
    }
    fn set_targets(&mut self, y: Option<&[f32]>) -> Result<()> {
        self.inner.set_targets(y)
    }
    fn forward(&mut self, v: Slot) -> Result<f64> {
        self.counts.forward += 1;
        self.inner.forward(v)
    }
    fn threshold_normalised(&mut self, w: Slot, g: Slot, s: usize, dst: Slot) -> Result<()> {
        self.counts.step_size += 1;
        self.counts.threshold += 1;
        self.inner.threshold_normalised(w, g, s, dst)
    }
    fn momentum(&mut self, beta: f32, first: bool) -> Result<()> {
        self.inner.momentum(beta, first)
    }
    fn residual(&mut self, v: Slot) -> Result<()> {
        self.counts.forward += 1;
        self.inner.residual(v)
    }
    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)> {
        self.counts.step_size += 1;
        self.inner.step_size(v, g)
    }
    fn trial(
        &mut self,
        v: Slot,
        g: Slot,
        dst: Slot,
        mu: f32,
        recompute_grad: bool,
    ) -> Result<(f64, f64)> {
        self.counts.trial += 1;
        self.inner.trial(v, g, dst, mu, recompute_grad)
    }
    fn accept_trial(&mut self) -> Result<()> {
        self.inner.accept_trial()
    }
    // A gradient is about the work of a step size (which adds one apply), a curvature that of
    // a forward pass.
    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        self.counts.step_size += 1;
        self.inner.gradient(v, g)
    }
    fn curvature(&mut self, p: Slot) -> Result<f64> {
        self.counts.forward += 1;
        self.inner.curvature(p)
    }
    fn combine(&mut self, dst: Slot, a: Slot, b: Slot, beta: f32) -> Result<()> {
        self.inner.combine(dst, a, b, beta)
    }
    fn refine_exact(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        // Forwarded (the inner backend's own version runs), counted as the work it replaces.
        let recs = self.inner.refine_exact(v, g, trial, f_v, steps)?;
        self.count_refine(StepRule::Exact, &recs);
        Ok(recs)
    }
    fn refine_armijo(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        mu: Option<f32>,
        steps: usize,
    ) -> Result<Vec<RefineStep>> {
        let recs = self.inner.refine_armijo(v, g, trial, f_v, mu, steps)?;
        self.count_refine(StepRule::Armijo(mu), &recs);
        Ok(recs)
    }
    fn refine_fresh(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        rule: StepRule,
        steps: usize,
    ) -> Result<(f64, Vec<RefineStep>)> {
        let (f_v, recs) = self.inner.refine_fresh(v, g, trial, rule, steps)?;
        self.counts.forward += 1;
        self.count_refine(rule, &recs);
        Ok((f_v, recs))
    }
    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()> {
        self.counts.threshold += 1;
        self.inner.threshold(w, mu, s, dst)
    }
    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        self.inner.predict(v)
    }
    fn memory(&self) -> crate::backend::MemoryStats {
        self.inner.memory()
    }
}
