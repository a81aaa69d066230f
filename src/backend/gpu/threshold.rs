//! The dense pass of the IHT step: `c = w − μ Aᵀ r` over all `m·d` entries in tiles of
//! neurons (and chunks of samples), merged tile by tile into a running top-s.

use super::buffers::{SLOT_TOP_A, SLOT_TOP_B};
use super::interface::{
    Op, DENSE_BLOCK_FEATURES, DENSE_BLOCK_NEURONS, FLAG_ACC, FLAG_MU_SC, FLAG_RUNMASK,
    GATE_NEURONS, SAMPLE_BLOCK, SCAN_BLOCK, TILE_MASK_BLOCKS, TILE_MASK_NEURONS, WG_SIZE,
};
use super::kernels::K;
use super::record::Rec;
use super::{Gates, GpuBackend};
use crate::error::Result;

/// Workgroups the dense product aims for (a few per core on a large GPU).
const DENSE_WORKGROUPS: usize = 512;

impl GpuBackend {
    /// Records after `rec` and runs the dense pass of `w` (slot `qw`, step `mu`; `None`: the
    /// one in `SC_MU`) and the top `s` of its candidates into slot `qd`.
    pub(super) fn run_threshold(
        &mut self,
        mut rec: Rec,
        qw: u32,
        mu: Option<f32>,
        s: usize,
        qd: u32,
    ) -> Result<()> {
        let lay = &self.lay;
        let (d, m) = (lay.d, lay.m);
        let c = &lay.cfg;
        // The running buffer starts empty.
        self.ctx.queue.write_buffer(
            &self.bufs.u,
            (c.u_slot_len + SLOT_TOP_A) as u64 * 4,
            bytemuck::bytes_of(&0u32),
        );
        // Sample groups of the product (partial rows per group, summed in order by
        // reduce_tile): enough to give every core a few workgroups. The same for every chunk
        // (a smaller last chunk leaves some groups empty; they add zero).
        let blocks_out =
            d.div_ceil(DENSE_BLOCK_FEATURES) * lay.tile_cap.min(m).div_ceil(DENSE_BLOCK_NEURONS);
        let sample_groups = DENSE_WORKGROUPS.div_ceil(blocks_out).clamp(
            1,
            lay.chunk
                .min(self.n_act)
                .div_ceil(SAMPLE_BLOCK)
                .min(lay.max_groups),
        ) as u32;
        // Weight gates whose snapshot has the support of the cached run mask (the usual
        // sequential step: gates from W, then step_size(W)): the product reads that mask
        // instead of evaluating the tile's gates again.
        let reuse_mask = self.gates.is_weights()
            && self
                .gate_sup
                .is_some_and(|g| self.mask_key == Some((g, self.gate_epoch, self.batch_epoch)));
        let max_wg = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let (mut cur, mut nxt) = (SLOT_TOP_A, SLOT_TOP_B);
        let mut tile0 = 0;
        while tile0 < m {
            let tn = lay.tile_cap.min(m - tile0);
            let elems = tn * d;
            // The tile's candidates c = w − μ G merged with the running buffer `cur` into `nxt`.
            let op = Op {
                slot_a: cur,
                slot_b: qw,
                slot_out: nxt,
                src_offset: self.res(self.cur),
                mu: mu.unwrap_or(0.0),
                tile0: tile0 as u32,
                tile_neurons: tn as u32,
                tile_elems: elems as u32,
                sample_groups,
                top_s: s as u32,
                scan_blocks: (lay.cap + elems).div_ceil(SCAN_BLOCK) as u32,
                ..self.op()
            };
            if self.gates == Gates::Random {
                rec.push(K::GenH, op, self.kernels.grid1(elems.div_ceil(WG_SIZE)));
            }
            // The product in chunks of active samples: the tile's gate mask holds one chunk.
            let mut c0 = 0;
            while c0 < self.n_act {
                let nc = lay.chunk.min(self.n_act - c0);
                let mut cop = Op {
                    chunk_start: c0 as u32,
                    chunk_len: nc as u32,
                    flags: if c0 > 0 { FLAG_ACC } else { 0 },
                    ..op
                };
                if reuse_mask {
                    cop.flags |= FLAG_RUNMASK;
                } else if self.gates != Gates::Open {
                    let blocks = nc.div_ceil(SAMPLE_BLOCK * TILE_MASK_BLOCKS);
                    let (y, z) = if blocks <= max_wg {
                        (blocks, 1)
                    } else {
                        (max_wg, blocks.div_ceil(max_wg))
                    };
                    let nw = if self.gates.is_weights() {
                        TILE_MASK_NEURONS
                    } else {
                        GATE_NEURONS
                    };
                    rec.push(
                        K::TileMask,
                        cop,
                        [tn.div_ceil(nw) as u32, y as u32, z as u32],
                    );
                }
                rec.push(
                    K::DenseMm,
                    cop,
                    [
                        tn.div_ceil(DENSE_BLOCK_NEURONS) as u32,
                        d.div_ceil(DENSE_BLOCK_FEATURES) as u32,
                        sample_groups,
                    ],
                );
                c0 += nc;
            }
            let reduce = Op {
                flags: if mu.is_none() { FLAG_MU_SC } else { 0 },
                ..op
            };
            rec.push(
                K::ReduceTile,
                reduce,
                self.kernels.grid1(elems.div_ceil(WG_SIZE)),
            );
            rec.push(K::AddW, op, self.kernels.grid1(lay.cap.div_ceil(WG_SIZE)));
            self.rec_select(&mut rec, op, lay.cap + elems);
            std::mem::swap(&mut cur, &mut nxt);
            tile0 += tn;
        }
        self.rec_copy(&mut rec, qd, cur);
        self.run(rec, &[])?;
        Ok(())
    }

    /// The radix select and ordered compaction of `op`'s candidates (slot `op.slot_a`, then
    /// the tile's `op.tile_elems`; at most `bound` of them) into slot `op.slot_out`.
    fn rec_select(&self, rec: &mut Rec, mut op: Op, bound: usize) {
        let hist_groups = bound.div_ceil(WG_SIZE * 16).clamp(1, 64) as u32;
        for pass in 0..3 {
            op.radix_pass = pass;
            rec.push(K::Hist, op, [hist_groups, 1, 1]);
            rec.push(K::Select, op, [1, 1, 1]);
        }
        let scan_grid = self.kernels.grid1(op.scan_blocks as usize);
        rec.push(K::Count, op, scan_grid);
        rec.push(K::Scan, op, [1, 1, 1]);
        rec.push(K::Scatter, op, scan_grid);
    }

    /// The `s` largest `|v|` of slot `qs` into slot `qd` on the device: the select and
    /// compaction of the dense pass with the slot as the running buffer and no tile, so the
    /// result stays sorted by index and ties go to the lower index. `s ≥ 1`.
    pub(super) fn run_prune(&mut self, qs: u32, s: usize, qd: u32) -> Result<()> {
        let cap = self.lay.cap;
        // Not in place: the scan sets the output's length before the compaction reads the
        // source's, and the compaction writes entries another workgroup may not have read.
        let out = if qs == qd { SLOT_TOP_A } else { qd };
        let op = Op {
            slot_a: qs,
            slot_out: out,
            tile_elems: 0,
            top_s: s as u32,
            scan_blocks: cap.div_ceil(SCAN_BLOCK) as u32,
            ..self.op()
        };
        let mut rec = Rec::default();
        self.rec_select(&mut rec, op, cap);
        if out != qd {
            self.rec_copy(&mut rec, qd, out);
        }
        self.run(rec, &[])?;
        Ok(())
    }
}
