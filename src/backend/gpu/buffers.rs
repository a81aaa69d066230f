//! Device memory: the region layout inside the few large buffers the kernels bind, the
//! uniform blocks, and a byte meter so that `memory()` reports what the device holds.
//!
//! Everything is allocated once in `GpuBackend::new`: the hot loop never allocates.

use super::context::GpuContext;
use super::GpuOptions;
use crate::backend::MemoryMeter;
use crate::error::{Error, Result};
use crate::problem::{Features, GridFourier, Problem};
use bytemuck::{Pod, Zeroable};

/// Slot registers on the device: the trait's six, the gate snapshot, the top-s ping-pong pair.
pub(crate) const NSLOT: usize = 9;
pub(crate) const SLOT_GATE: u32 = 6;
pub(crate) const SLOT_TOP_A: u32 = 7;
pub(crate) const SLOT_TOP_B: u32 = 8;

/// Neurons per dense-pass workgroup (shaders/gates.wgsl `TG`), samples per block (`BS`).
pub(crate) const TG: usize = 8;
pub(crate) const BS: usize = 32;
/// Elements per count/scatter block (shaders/topk.wgsl `BLK`).
pub(crate) const SCAN_BLOCK: usize = 1024;
/// Target floats per dense-pass tile (`tile·d`): tiles of ~256 Ki candidates keep the merge
/// cost (s per tile) small against the tile itself and give the matrix product enough
/// output blocks to fill a large GPU.
const TILE_FLOATS: usize = 1 << 18;
/// Active samples per dense-pass chunk: the tile's gate mask (`tn_cap × MASK_CHUNK` bits) is
/// built and consumed one chunk at a time, so it does not grow with the number of samples.
pub(crate) const MASK_CHUNK: usize = 1 << 18;
/// Partial-G groups over samples (more groups: more parallelism, more partial memory).
const MAX_GROUPS: usize = 32;
/// Threads the support apply aims for: a problem with fewer samples splits the support's runs
/// into chunks (at most `MAX_APPLY_CHUNKS`) and sums their partial predictions.
pub(crate) const APPLY_THREADS: usize = 1 << 16;
pub(crate) const MAX_APPLY_CHUNKS: usize = 64;
/// Scalars read back by the support passes.
pub(crate) const SCALARS: usize = 16;
/// Scalars of a refinement batch (shaders/common.wgsl `SC_*`, after the support passes'):
/// the current step's ‖g‖², ‖A g‖², μ, the loss at the current iterate, then `REC_LEN`
/// floats per step from `SC_REC` on.
pub(crate) const SC_FV: usize = 7;
pub(crate) const SC_REC: usize = SCALARS;
pub(crate) const REC_LEN: usize = 5;
/// Steps of one refinement submission (more are split into several).
pub(crate) const REFINE_MAX: usize = 32;
/// Floats of the scalar region.
const SCALAR_REGION: usize = SC_REC + REC_LEN * REFINE_MAX;
/// `u_meta` words of a refinement batch (shaders/common.wgsl): stopped, steps accepted.
pub(crate) const META_STOP: usize = 6;
/// Dynamic op blocks per submission before a call is split into several submissions.
pub(crate) const OPS_PER_SUBMIT: usize = 2048;

/// Static kernel parameters (shaders/common.wgsl `Cfg`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Cfg {
    pub n: u32,
    pub d: u32,
    pub m: u32,
    pub cap: u32,
    pub feat: u32,
    pub gate: u32,
    pub half: u32,
    pub naxes: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub xlines: u32,
    pub mw: u32,
    pub ax: [u32; 4],
    pub to: [u32; 4],
    pub f_y: u32,
    pub f_vals: u32,
    pub f_ct: u32,
    pub f_gp: u32,
    pub f_part: u32,
    pub f_sc: u32,
    pub f_ht: u32,
    pub maxruns: u32,
    pub u_batch: u32,
    pub u_idx: u32,
    pub u_len: u32,
    pub u_meta: u32,
    pub u_runn: u32,
    pub u_runs: u32,
    pub u_emap: u32,
    pub u_mask: u32,
    pub u_goff: u32,
    pub u_cand: u32,
    pub u_keys: u32,
    pub u_blk: u32,
    pub tn_cap: u32,
    pub gate_slot: u32,
    /// Always 0.0; opaque to shader compilers (see `acc2` in common.wgsl).
    pub zero: f32,
    pub f_pp: u32,
    pub u_tmask: u32,
    pub mwt: u32,
    pub u_nrun: u32,
    pub xfm: u32,
}

/// Per-dispatch parameters (shaders/common.wgsl `Op`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Op {
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub n_act: u32,
    pub batched: u32,
    pub src: u32,
    pub dst: u32,
    pub flags: u32,
    pub mu: f32,
    pub tile0: u32,
    pub tn: u32,
    pub s: u32,
    pub pass: u32,
    pub ng: u32,
    pub count: u32,
    /// Scalar index (reduce) or number of scan blocks (count / scan / scatter).
    pub sc: u32,
}

/// Where everything lives inside the float buffer `F` and the integer buffer `U` (in
/// elements), plus the derived sizes of the dense pass.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub cap: usize,
    /// Residual regions: current / trial alternate; the third is scratch (A g, predictions).
    pub f_res: [usize; 3],
    pub f_len: usize,
    pub u_len: usize,
    /// Neurons per dense-pass tile (a multiple of TG).
    pub tn_cap: usize,
    pub max_groups: usize,
    /// Active samples per dense-pass chunk (the tile mask holds one chunk).
    pub chunk: usize,
    /// Bytes of the per-tile regions (gate table, candidates, partial G, keys, scan blocks).
    pub tile_bytes: u64,
    /// Lines of X per binding — features (feature-major) or samples (sample-major) — and
    /// the number of bindings used.
    pub xlines: usize,
    pub xchunks: usize,
    pub cfg: Cfg,
}

/// Bump allocator over element offsets.
struct Arena(usize);

impl Arena {
    fn take(&mut self, len: usize) -> usize {
        let at = self.0;
        // 16-element alignment keeps every region's start at a 64-byte boundary.
        self.0 += len.div_ceil(16) * 16;
        at
    }
}

fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::DeviceLimit {
        what,
        needed: v as u64,
        limit: u32::MAX as u64,
        fix: "use fewer samples, neurons or features, or --backend cpu",
    })
}

impl Layout {
    /// `grid`: the Fourier features to generate on the fly (None: X is bound as a matrix).
    pub fn new(
        problem: &Problem,
        cap: usize,
        grid: Option<&GridFourier>,
        opts: &GpuOptions,
        limits: &wgpu::Limits,
    ) -> Result<Layout> {
        let (n, d, m) = (problem.n, problem.d, problem.m);
        let bind_max = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let x_max = bind_max.min(opts.feature_binding_bytes.unwrap_or(u64::MAX));
        // X feature-major (one column of n samples after another: threads of consecutive
        // samples read consecutive addresses, for full-batch passes) or sample-major (a
        // thread's features in one row: locality for the scattered samples of minibatches).
        // Whole columns or rows per binding, at most four bindings.
        let fm = opts.feature_major;
        let (line_bytes, lines) = if fm {
            ((n * 4) as u64, d)
        } else {
            ((d * 4) as u64, n)
        };
        let (xlines, xchunks) = if grid.is_some() {
            (lines, 1)
        } else {
            let cols = (x_max / line_bytes).min(lines as u64) as usize;
            if cols == 0 || lines.div_ceil(cols) > 4 {
                return Err(Error::DeviceLimit {
                    what: "the feature matrix X",
                    needed: lines as u64 * line_bytes,
                    limit: 4 * x_max,
                    fix: "use fewer samples or features (or a minibatch-sized subset), or --backend cpu",
                });
            }
            (cols, lines.div_ceil(cols))
        };
        let maxruns = m.min(cap);
        let mw = n.div_ceil(32);
        let tn_cap = opts
            .tile_neurons
            .map_or((TILE_FLOATS / d) / TG * TG, |t| t.div_ceil(TG) * TG)
            .clamp(TG, m.div_ceil(TG) * TG);
        let max_groups = n.div_ceil(BS).clamp(1, MAX_GROUPS);
        let tile = tn_cap * d;
        let scan_blocks = (cap + tile).div_ceil(SCAN_BLOCK);

        let mut f = Arena(0);
        let f_y = f.take(n);
        let f_res = [f.take(n), f.take(n), f.take(n)];
        let f_vals = f.take(NSLOT * cap);
        let mut to = [0usize; 4];
        let mut ax = [1usize; 4];
        let mut half = 0;
        if let Some(g) = grid {
            if g.axes.len() > 4 {
                return Err(Error::arg("--features", "at most four grid axes"));
            }
            half = g.half();
            for (a, table) in g.phases.iter().enumerate() {
                to[a] = f.take(table.len());
                ax[a] = g.axes[a];
            }
        }
        let tile_f0 = f.0;
        let f_ct = f.take(tile);
        let f_ht = f.take(tile);
        let f_gp = f.take(max_groups * tile);
        let tile_f = f.0 - tile_f0;
        let f_part = f.take(n.div_ceil(256).max(1));
        // Partial predictions (hi, lo) of the apply chunks: chunks · n_act < APPLY_THREADS + n.
        let f_pp = f.take(2 * (APPLY_THREADS + n));
        let f_sc = f.take(SCALAR_REGION);
        let f_len = f.0;

        let mut u = Arena(0);
        let u_batch = u.take(n);
        let u_idx = u.take(NSLOT * cap);
        let u_len = u.take(NSLOT);
        let u_meta = u.take(16);
        let u_runn = u.take(maxruns);
        let u_runs = u.take(maxruns + 1);
        let u_emap = u.take(cap);
        let u_mask = u.take(maxruns * mw);
        let u_goff = u.take(2 * m);
        let u_cand = u.take(m);
        // Neuron → 1 + its run in the cached support mask (0: not a run).
        let u_nrun = u.take(m);
        let tile_u0 = u.0;
        let u_keys = u.take(tile);
        let chunk = n.min(
            opts.mask_chunk
                .map_or(MASK_CHUNK, |c| c.max(1).div_ceil(32) * 32),
        );
        let mwt = chunk.div_ceil(32);
        let u_tmask = u.take(tn_cap * mwt);
        let u_blk = u.take(2 * scan_blocks);
        let tile_u = u.0 - tile_u0;
        let u_total = u.0;

        for (what, elems) in [
            ("the float state buffer", f_len),
            ("the index state buffer", u_total),
        ] {
            let bytes = elems as u64 * 4;
            if bytes > bind_max {
                return Err(Error::DeviceLimit {
                    what,
                    needed: bytes,
                    limit: bind_max,
                    fix: "use fewer samples, a smaller s, or --backend cpu",
                });
            }
        }
        let seed = problem.gate_seed;
        let cfg = Cfg {
            n: u32_of("samples", n)?,
            d: u32_of("features", d)?,
            m: u32_of("neurons", m)?,
            cap: u32_of("nonzeros", cap)?,
            feat: grid.is_some() as u32,
            gate: 0,
            half: half as u32,
            naxes: grid.map_or(0, |g| g.axes.len() as u32),
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            xlines: u32_of("feature lines", xlines)?,
            mw: mw as u32,
            ax: ax.map(|v| v as u32),
            to: to.map(|v| v as u32),
            f_y: f_y as u32,
            f_vals: f_vals as u32,
            f_ct: f_ct as u32,
            f_gp: f_gp as u32,
            f_part: f_part as u32,
            f_sc: f_sc as u32,
            f_ht: f_ht as u32,
            maxruns: maxruns as u32,
            u_batch: u_batch as u32,
            u_idx: u_idx as u32,
            u_len: u_len as u32,
            u_meta: u_meta as u32,
            u_runn: u_runn as u32,
            u_runs: u_runs as u32,
            u_emap: u_emap as u32,
            u_mask: u_mask as u32,
            u_goff: u_goff as u32,
            u_cand: u_cand as u32,
            u_keys: u_keys as u32,
            u_blk: u_blk as u32,
            tn_cap: tn_cap as u32,
            gate_slot: SLOT_GATE,
            zero: 0.0,
            f_pp: f_pp as u32,
            u_tmask: u_tmask as u32,
            mwt: mwt as u32,
            u_nrun: u_nrun as u32,
            xfm: fm as u32,
        };
        Ok(Layout {
            n,
            d,
            m,
            cap,
            f_res,
            f_len,
            u_len: u_total,
            tn_cap,
            max_groups,
            chunk,
            tile_bytes: 4 * (tile_f + tile_u) as u64,
            xlines,
            xchunks,
            cfg,
        })
    }
}

/// The device buffers of one backend.
pub(crate) struct Buffers {
    pub cfg: wgpu::Buffer,
    pub ops: wgpu::Buffer,
    pub op_stride: u64,
    pub x: Vec<wgpu::Buffer>,
    pub f: wgpu::Buffer,
    pub u: wgpu::Buffer,
    pub h: wgpu::Buffer,
    pub staging: wgpu::Buffer,
}

fn create(
    ctx: &GpuContext,
    meter: &mut MemoryMeter,
    label: &str,
    size: u64,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    // Storage bindings need at least one element; sizes stay multiples of 4.
    let size = size.max(16).div_ceil(4) * 4;
    meter.alloc(size);
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: false,
    })
}

impl Buffers {
    pub fn new(
        ctx: &GpuContext,
        problem: &Problem,
        lay: &Layout,
        dense_x: Option<&[f32]>,
        meter: &mut MemoryMeter,
    ) -> Result<Buffers> {
        use wgpu::BufferUsages as B;
        let storage = B::STORAGE | B::COPY_DST | B::COPY_SRC;
        let align = ctx.limits.min_uniform_buffer_offset_alignment.max(1) as u64;
        let op_stride = (std::mem::size_of::<Op>() as u64).div_ceil(align) * align;
        let cfg = create(
            ctx,
            meter,
            "spinr cfg",
            std::mem::size_of::<Cfg>() as u64,
            B::UNIFORM | B::COPY_DST,
        );
        let ops = create(
            ctx,
            meter,
            "spinr ops",
            op_stride * OPS_PER_SUBMIT as u64,
            B::UNIFORM | B::COPY_DST,
        );
        let mut x = Vec::new();
        if let Some(data) = dense_x {
            use rayon::prelude::*;
            let (n, d) = (lay.n, lay.d);
            for c in 0..lay.xchunks {
                if lay.cfg.xfm == 0 {
                    // Sample-major: rows lo..hi as given.
                    let lo = c * lay.xlines;
                    let hi = ((c + 1) * lay.xlines).min(n);
                    let rows = &data[lo * d..hi * d];
                    let buf = create(ctx, meter, "spinr X", (rows.len() * 4) as u64, storage);
                    ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(rows));
                    x.push(buf);
                    continue;
                }
                let lo = c * lay.xlines;
                let hi = ((c + 1) * lay.xlines).min(d);
                // Columns lo..hi of the row-major input, transposed.
                let mut cols = vec![0f32; (hi - lo) * n];
                cols.par_chunks_mut(n).enumerate().for_each(|(k, col)| {
                    for (i, v) in col.iter_mut().enumerate() {
                        *v = data[i * d + lo + k];
                    }
                });
                let buf = create(ctx, meter, "spinr X", (cols.len() * 4) as u64, storage);
                ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(&cols));
                x.push(buf);
            }
        }
        while x.len() < 4 {
            x.push(create(ctx, meter, "spinr X (unused)", 16, storage));
        }
        let f = create(ctx, meter, "spinr F", lay.f_len as u64 * 4, storage);
        let u = create(ctx, meter, "spinr U", lay.u_len as u64 * 4, storage);
        let h = create(ctx, meter, "spinr histogram", 2048 * 4, storage);
        let staging_bytes = (4 * lay.n).max(8 * lay.cap + 16).max(4 * SCALAR_REGION + 8) as u64;
        let staging = create(
            ctx,
            meter,
            "spinr readback",
            staging_bytes,
            B::MAP_READ | B::COPY_DST,
        );
        // Initial contents: targets, phase tables, zeroed lengths and histogram.
        let c = &lay.cfg;
        ctx.queue
            .write_buffer(&f, c.f_y as u64 * 4, bytemuck::cast_slice(&problem.y));
        if let (1, Features::Grid(g)) = (c.feat, &problem.features) {
            for (a, table) in g.phases.iter().enumerate() {
                ctx.queue
                    .write_buffer(&f, c.to[a] as u64 * 4, bytemuck::cast_slice(table));
            }
        }
        ctx.queue
            .write_buffer(&u, c.u_len as u64 * 4, bytemuck::cast_slice(&[0u32; 32]));
        ctx.queue
            .write_buffer(&h, 0, bytemuck::cast_slice(&[0u32; 2048]));
        ctx.queue.write_buffer(&cfg, 0, bytemuck::bytes_of(c));
        Ok(Buffers {
            cfg,
            ops,
            op_stride,
            x,
            f,
            u,
            h,
            staging,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{Features, GateMode, Problem};

    fn problem(n: usize, d: usize, m: usize) -> Problem {
        Problem::new(
            d,
            m,
            Features::Dense(vec![0.5; n * d]),
            vec![0.0; n],
            GateMode::Convex,
            1,
        )
        .unwrap()
    }

    fn limits(binding: u64) -> wgpu::Limits {
        wgpu::Limits {
            max_storage_buffer_binding_size: binding,
            max_buffer_size: binding,
            ..wgpu::Limits::default()
        }
    }

    #[test]
    fn dense_features_split_by_columns_across_bindings() {
        let p = problem(1000, 10, 3);
        // 4000 bytes a column: a 4000-byte binding holds one, too few for four bindings.
        let e = Layout::new(&p, 5, None, &GpuOptions::default(), &limits(4000)).unwrap_err();
        assert!(matches!(e, Error::DeviceLimit { .. }), "{e}");
        assert!(e.to_string().contains("--backend cpu"), "{e}");
        let opts = GpuOptions {
            feature_binding_bytes: Some(12_000),
            ..Default::default()
        };
        let lay = Layout::new(&p, 5, None, &opts, &limits(1 << 30)).unwrap();
        assert_eq!((lay.xlines, lay.xchunks), (3, 4));
        // Sample-major: 40-byte rows, 300 a binding.
        let rows = GpuOptions {
            feature_major: false,
            ..opts
        };
        let lay = Layout::new(&p, 5, None, &rows, &limits(1 << 30)).unwrap();
        assert_eq!((lay.xlines, lay.xchunks), (300, 4));
        let lay = Layout::new(&p, 5, None, &GpuOptions::default(), &limits(1 << 30)).unwrap();
        assert_eq!((lay.xlines, lay.xchunks), (10, 1));
    }

    #[test]
    fn state_beyond_the_binding_limit_is_an_error_not_corruption() {
        let p = problem(10, 4, 2);
        let e = Layout::new(&p, 8, None, &GpuOptions::default(), &limits(256)).unwrap_err();
        assert!(matches!(e, Error::DeviceLimit { .. }), "{e}");
    }

    #[test]
    fn tiles_are_whole_neuron_groups_and_regions_do_not_overlap() {
        let p = problem(77, 13, 29);
        let lay = Layout::new(&p, 40, None, &GpuOptions::default(), &limits(1 << 30)).unwrap();
        assert_eq!(lay.tn_cap % TG, 0);
        assert!(lay.tn_cap >= 29);
        let c = &lay.cfg;
        let f = [
            c.f_y,
            lay.f_res[0] as u32,
            c.f_vals,
            c.f_ct,
            c.f_ht,
            c.f_gp,
            c.f_part,
            c.f_sc,
        ];
        assert!(f.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        assert!((c.f_sc as usize + SCALAR_REGION) <= lay.f_len);
        let u = [
            c.u_batch, c.u_idx, c.u_len, c.u_meta, c.u_runn, c.u_runs, c.u_emap, c.u_mask,
        ];
        assert!(u.windows(2).all(|w| w[0] < w[1]), "{u:?}");
        let small = GpuOptions {
            tile_neurons: Some(3),
            ..Default::default()
        };
        let lay = Layout::new(&p, 40, None, &small, &limits(1 << 30)).unwrap();
        assert_eq!(lay.tn_cap, 8);
    }
}
