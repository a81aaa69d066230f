//! Recording of the support passes: the cached runs and gate mask of a support, `A_S v`,
//! `A_Sᵀ r`, slot copies, and running a recording with its readback.

use super::buffers::MAX_APPLY_CHUNKS;
use super::interface::{GATE_NEURONS, SAMPLE_BLOCK, SCALARS, WG_SIZE};
use super::kernels::K;
use super::record::{submit, Read, Rec};
use super::{Gates, GpuBackend, SupportOrder};
use crate::error::Result;

impl GpuBackend {
    /// Records the runs and gate mask of slot `v`'s support unless they are cached. `all`:
    /// for every sample regardless of the minibatch (predict).
    pub(super) fn ensure_mask(&mut self, rec: &mut Rec, v: u32, all: bool) {
        let batch = if all { None } else { self.batch_epoch };
        let key = (self.sup[v as usize], self.gate_epoch, batch);
        if self.mask_key == Some(key) {
            return;
        }
        let op = self.op_over(all).runs(v);
        rec.push(K::Runs, op, [1, 1, 1]);
        let sup = self.sup[v as usize];
        if self.support_order == SupportOrder::Feature && self.feat_sup != Some(sup) {
            // The support's per-feature lists: they depend on the support alone, so a new
            // gate snapshot or minibatch keeps them.
            self.feat_sup = Some(sup);
            let entries = self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE));
            rec.push(K::FeatCount, op, entries);
            rec.push(K::FeatScan, op, [1, 1, 1]);
            rec.push(K::FeatPlace, op, entries);
            let d = self.lay.cfg.d as usize;
            rec.push(K::FeatSort, op, self.kernels.grid1(d.div_ceil(WG_SIZE)));
        }
        if self.gates != Gates::Open {
            let blocks = (op.n_act as usize).div_ceil(SAMPLE_BLOCK);
            let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
            let (x, z) = if blocks <= max {
                (blocks, 1)
            } else {
                (max, blocks.div_ceil(max))
            };
            let groups = self.lay.cfg.max_runs.div_ceil(GATE_NEURONS as u32);
            rec.push(K::Mask, op, [groups, x as u32, z as u32]);
        }
        self.mask_key = Some(key);
    }

    /// `out = A_S v [− y]` over the active samples into `F[dst]` (if `store`), Σ out² into
    /// scalar `sc`.
    pub(super) fn rec_apply(
        &self,
        rec: &mut Rec,
        v: u32,
        flags: u32,
        dst: u32,
        sc: u32,
        all: bool,
    ) {
        let groups = self.rec_apply_parts(rec, v, flags, dst, all);
        let red = self
            .op()
            .reduce_sum(self.lay.cfg.f_partial_sums, groups as u32, sc);
        rec.push(K::Reduce, red, [1, 1, 1]);
    }

    /// [`Self::rec_apply`] up to the per-workgroup partial sums of out² in `f_partial_sums`;
    /// returns their number.
    pub(super) fn rec_apply_parts(
        &self,
        rec: &mut Rec,
        v: u32,
        flags: u32,
        dst: u32,
        all: bool,
    ) -> usize {
        let base = self.op_over(all);
        let n_act = base.n_act as usize;
        let groups = n_act.div_ceil(WG_SIZE);
        // Chunks split the runs (by neuron) or the features (by feature).
        let (kernel, parts) = match self.support_order {
            SupportOrder::Neuron => (K::Apply, self.lay.cfg.max_runs as usize),
            SupportOrder::Feature => (K::ApplyF, self.lay.cfg.d as usize),
        };
        let chunks = self
            .apply_threads
            .div_ceil(n_act)
            .clamp(1, MAX_APPLY_CHUNKS.min(parts).max(1)) as u32;
        let op = base.apply(v, flags, dst, chunks);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let (x, z) = if groups <= max {
            (groups, 1)
        } else {
            (max, groups.div_ceil(max))
        };
        rec.push(kernel, op, [x as u32, op.run_chunks, z as u32]);
        rec.push(K::ApplyFin, op, self.kernels.grid1(groups));
        groups
    }

    /// The kernel and grid of `A_Sᵀ r`: a workgroup per entry (by neuron) or per feature.
    pub(super) fn grad_job(&self) -> (K, [u32; 3]) {
        match self.support_order {
            SupportOrder::Neuron => (K::Grad, self.kernels.grid1(self.lay.cap)),
            SupportOrder::Feature => (K::GradF, self.kernels.grid1(self.lay.cfg.d as usize)),
        }
    }

    /// `g = A_Sᵀ r` on the support of `v`, ‖g‖² into scalar `sc`.
    pub(super) fn rec_grad(&self, rec: &mut Rec, v: u32, g: u32, sc: u32) {
        let op = self.op().grad(v, g, self.res(self.cur));
        let (kernel, grid) = self.grad_job();
        rec.push(kernel, op, grid);
        rec.push(K::Reduce, self.op().reduce_slot_sq(g, sc), [1, 1, 1]);
    }

    pub(super) fn rec_copy(&self, rec: &mut Rec, dst: u32, src: u32) {
        rec.push(
            K::CopySlot,
            self.op().copy_slot(src, dst),
            self.kernels.grid1(self.lay.cap.div_ceil(WG_SIZE)),
        );
    }

    pub(super) fn run(&self, rec: Rec, reads: &[Read<'_>]) -> Result<Vec<u8>> {
        if !reads.is_empty() {
            self.round_trips
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        submit(&self.ctx, &self.kernels, &self.bufs, rec, reads)
    }

    /// Runs `rec` and reads back the first `count` scalars.
    pub(super) fn run_scalars(&self, rec: Rec, count: usize) -> Result<Vec<f64>> {
        let read = Read {
            buffer: &self.bufs.f,
            offset: self.lay.cfg.f_scalars as u64 * 4,
            bytes: (count.min(SCALARS) * 4) as u64,
        };
        let bytes = self.run(rec, &[read])?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)
            .into_iter()
            .map(|v| v as f64)
            .collect())
    }
}
