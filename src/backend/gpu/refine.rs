//! The refinement steps of an IHT step (exact or Armijo), run speculatively on the device: one
//! submission and one readback for up to `REFINE_MAX` steps.

use super::buffers::REFINE_MAX;
use super::interface::{
    Op, FLAG_GUARD, FLAG_IF_ODD, FLAG_MU_KEEP, FLAG_MU_SC, FLAG_STORE, FLAG_SUB_Y, META_STOP,
    REC_LEN, SC_F0, SC_FV, SC_MU, SC_REC, WG_SIZE,
};
use super::kernels::K;
use super::record::{Read, Rec};
use super::GpuBackend;
use crate::backend::{RefineStep, StepRule};
use crate::error::{Error, Result};

impl GpuBackend {
    /// [`crate::backend::Backend::refine_exact`] or [`crate::backend::Backend::refine_armijo`]
    /// on slots `q = (v, g, trial)`, in batches of at most `REFINE_MAX` steps, from the loss
    /// `f_v` at `v`, or (`None`) from `f(v)` computed in the first batch's submission
    /// ([`crate::backend::Backend::refine_fresh`]). Returns the loss at `v` it started from and
    /// the records; `steps` must be at least 1 when `f_v` is `None`.
    pub(super) fn refine_batches(
        &mut self,
        q: (u32, u32, u32),
        f_v: Option<f64>,
        mut rule: StepRule,
        steps: usize,
    ) -> Result<(f64, Vec<RefineStep>)> {
        let mut out: Vec<RefineStep> = Vec::with_capacity(steps);
        // The loss at `v` as the call found it, and at the current iterate.
        let (mut first, mut current) = (f_v, f_v);
        while out.len() < steps {
            let n = (steps - out.len()).min(REFINE_MAX);
            let (f_at, batch) = self.refine_batch(q, current, rule, n)?;
            first.get_or_insert(f_at);
            if let (StepRule::Armijo(_), Some(r)) = (rule, batch.last()) {
                // The next batch keeps the device's μ (the host's copy of it for the record).
                rule = StepRule::Armijo(Some(r.mu));
            }
            let all = batch.last().is_some_and(|r| r.accepted);
            current = Some(batch.last().filter(|r| r.accepted).map_or(f_at, |r| r.f_t));
            out.extend(batch);
            if !all {
                break;
            }
        }
        match first {
            Some(f) => Ok((f, out)),
            None => Err(Error::Gpu(
                "a refinement that computes its starting loss needs at least one step".into(),
            )),
        }
    }

    /// Up to `REFINE_MAX` refinement steps in one submission (see
    /// [`crate::backend::Backend::refine_exact`]). The steps are recorded speculatively, as if
    /// every one were accepted: the iterate alternates between slots `v` and `t` and its
    /// residual between the two residual regions, so an accepted step costs no copies.
    /// `refine_decide` stops the chain at the first rejection; a final copy brings the iterate
    /// back to `v` when it sits in `t`. An exact step computes μ from `‖A g‖²` (one apply of
    /// `g`); an Armijo step after the first keeps μ and skips that apply. With `f_v` `None` the
    /// chain starts with the forward pass of `v` (residual and loss on the device, as
    /// [`crate::backend::Backend::forward`] computes them) and the loss comes back with the
    /// records. Returns the loss at `v` and the records.
    pub(super) fn refine_batch(
        &mut self,
        (qv, qg, qt): (u32, u32, u32),
        f_v: Option<f64>,
        rule: StepRule,
        steps: usize,
    ) -> Result<(f64, Vec<RefineStep>)> {
        let c = self.lay.cfg;
        let queue = &self.ctx.queue;
        queue.write_buffer(
            &self.bufs.u,
            (c.u_meta as usize + META_STOP) as u64 * 4,
            bytemuck::cast_slice(&[0u32, 0u32]),
        );
        if let Some(f_v) = f_v {
            queue.write_buffer(
                &self.bufs.f,
                (c.f_scalars as usize + SC_FV) as u64 * 4,
                bytemuck::bytes_of(&(f_v as f32)),
            );
        }
        if let StepRule::Armijo(Some(mu)) = rule {
            queue.write_buffer(
                &self.bufs.f,
                (c.f_scalars as usize + SC_MU) as u64 * 4,
                bytemuck::bytes_of(&mu),
            );
        }
        let mut rec = Rec::default();
        self.ensure_mask(&mut rec, qv, false);
        if f_v.is_none() {
            // f(v): the residual into the current region, its loss into SC_FV for the chain
            // and into SC_F0 for the host (the chain moves SC_FV on).
            let res = self.res(self.cur);
            let parts = self.rec_apply_parts(&mut rec, qv, FLAG_SUB_Y | FLAG_STORE, res, false);
            for sc in [SC_F0, SC_FV] {
                let red = self
                    .op()
                    .reduce_sum(c.f_partial_sums, parts as u32, sc as u32);
                rec.push(K::Reduce, red, [1, 1, 1]);
            }
        }
        let slot_grid = self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE));
        // Every kernel of the chain returns once a step has been rejected.
        let guard = Op {
            flags: FLAG_GUARD,
            ..self.op()
        };
        for k in 0..steps {
            let (a, b) = if k % 2 == 0 { (qv, qt) } else { (qt, qv) };
            // g = A_Sᵀ r at the iterate.
            let grad = guard.grad(a, qg, self.res((self.cur + k) % 2));
            let (kernel, grid) = self.grad_job();
            rec.push(kernel, grad, grid);
            let normalised = match rule {
                StepRule::Exact => true,
                StepRule::Armijo(mu) => k == 0 && mu.is_none(),
            };
            if normalised {
                // ‖A g‖² partials, then ‖g‖², ‖A g‖² and μ on the device.
                let parts = self.rec_apply_parts(&mut rec, qg, FLAG_GUARD, 0, false);
                rec.push(K::RefineMu, guard.refine_mu(qg, parts as u32), [1, 1, 1]);
            } else {
                let keep = Op {
                    flags: FLAG_GUARD | FLAG_MU_KEEP,
                    ..self.op()
                };
                rec.push(K::RefineMu, keep.refine_mu(qg, 0), [1, 1, 1]);
            }
            // trial = v − μ g (μ from the scalar region) and its residual (in the other region).
            let axpy = Op {
                flags: FLAG_GUARD | FLAG_MU_SC,
                ..self.op()
            }
            .axpy(a, qg, b, 0.0);
            rec.push(K::Axpy, axpy, slot_grid);
            let next = self.res((self.cur + k + 1) % 2);
            let parts = self.rec_apply_parts(
                &mut rec,
                b,
                FLAG_GUARD | FLAG_SUB_Y | FLAG_STORE,
                next,
                false,
            );
            let decide = guard.refine_decide(parts as u32, k as u32);
            rec.push(K::RefineDecide, decide, [1, 1, 1]);
        }
        let fix = Op {
            flags: FLAG_IF_ODD,
            ..self.op()
        }
        .copy_slot(qt, qv);
        rec.push(K::CopySlot, fix, slot_grid);
        let mut reads = vec![
            Read {
                buffer: &self.bufs.u,
                offset: (c.u_meta as usize + META_STOP) as u64 * 4,
                bytes: 8,
            },
            Read {
                buffer: &self.bufs.f,
                offset: (c.f_scalars as usize + SC_REC) as u64 * 4,
                bytes: (REC_LEN * steps * 4) as u64,
            },
        ];
        if f_v.is_none() {
            reads.push(Read {
                buffer: &self.bufs.f,
                offset: (c.f_scalars as usize + SC_F0) as u64 * 4,
                bytes: 4,
            });
        }
        let mut bytes = self.run(rec, &reads)?;
        let f_v = match f_v {
            Some(f) => f,
            None => {
                let tail = bytes.split_off(bytes.len() - 4);
                f32::from_le_bytes(tail.try_into().expect("4 bytes")) as f64
            }
        };
        let (stop, acc) = (
            u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize,
            u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize,
        );
        let ran = acc + stop;
        if stop > 1 || ran > steps || (stop == 0 && acc != steps) {
            return Err(Error::Gpu(format!(
                "refinement batch of {steps} steps reports {acc} accepted, stop word {stop}"
            )));
        }
        let vals: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[8..]);
        let out: Vec<RefineStep> = vals
            .chunks(REC_LEN)
            .take(ran)
            .map(|r| RefineStep {
                gn: r[0] as f64,
                curv: r[1] as f64,
                mu: r[2],
                f_t: r[3] as f64,
                accepted: r[4] != 0.0,
            })
            .collect();
        if out.iter().enumerate().any(|(i, r)| r.accepted != (i < acc)) {
            return Err(Error::Gpu(
                "refinement records disagree with the step count".into(),
            ));
        }
        // The device moved the iterate's residual `acc` times; g and t now share v's support.
        self.cur = (self.cur + acc) % 2;
        let sv = self.sup[qv as usize];
        self.sup[qg as usize] = sv;
        self.sup[qt as usize] = sv;
        if let Some(r) = out.last() {
            self.last_gnorm = r.gn;
        }
        Ok((f_v, out))
    }
}
