//! Device memory: the region layout inside the few large buffers the kernels bind (its
//! offsets go to the shaders in the `Cfg` block), and the buffers themselves, counted by a byte
//! meter so that `memory()` reports what the device holds.
//!
//! Everything is allocated once in `GpuBackend::new`: the hot loop never allocates.

use super::context::GpuContext;
use super::interface::{
    Cfg, Op, GATE_NEURONS, HIST_BINS, META_WORDS, REC_LEN, SAMPLE_BLOCK, SCAN_BLOCK, SC_REC,
    WG_SIZE,
};
use super::GpuOptions;
use crate::backend::{MemoryMeter, Slot};
use crate::error::{Error, Result};
use crate::problem::{Features, GridFourier, Problem};
use crate::samples::{self, SampleBlocks, SampleSource};

/// Slot registers on the device: the trait's, the gate snapshot, the top-s ping-pong pair.
pub(crate) const NSLOT: usize = Slot::COUNT + 3;
pub(crate) const SLOT_GATE: u32 = Slot::COUNT as u32;
pub(crate) const SLOT_TOP_A: u32 = SLOT_GATE + 1;
pub(crate) const SLOT_TOP_B: u32 = SLOT_GATE + 2;

/// Target floats per dense-pass tile (`tile·d`): tiles of ~256 Ki candidates keep the merge
/// cost (s per tile) small against the tile itself and give the matrix product enough
/// output blocks to fill a large GPU.
const TILE_FLOATS: usize = 1 << 18;
/// Active samples per dense-pass chunk: the tile's gate mask (`tile_cap × MASK_CHUNK` bits) is
/// built and consumed one chunk at a time, so it does not grow with the number of samples.
pub(crate) const MASK_CHUNK: usize = 1 << 18;
/// Partial-G groups over samples (more groups: more parallelism, more partial memory).
const MAX_GROUPS: usize = 32;
/// Threads the support apply aims for: a problem with fewer samples splits the support's runs
/// into chunks (at most `MAX_APPLY_CHUNKS`) and sums their partial predictions.
pub(crate) const APPLY_THREADS: usize = 1 << 16;
pub(crate) const MAX_APPLY_CHUNKS: usize = 64;
/// Steps of one refinement submission (more are split into several).
pub(crate) const REFINE_MAX: usize = 32;
/// Floats of the scalar region.
const SCALAR_REGION: usize = SC_REC + REC_LEN * REFINE_MAX;
/// Dynamic op blocks per submission before a call is split into several submissions.
pub(crate) const OPS_PER_SUBMIT: usize = 2048;

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
    /// Lengths of the float buffer `F` and the index buffer `U`.
    pub f_floats: usize,
    pub u_words: usize,
    /// Neurons per dense-pass tile (a multiple of GATE_NEURONS).
    pub tile_cap: usize,
    pub max_groups: usize,
    /// Active samples per dense-pass chunk (the tile mask holds one chunk).
    pub chunk: usize,
    /// Bytes of the per-tile regions (gate table, candidates, partial G, keys, scan blocks).
    pub tile_bytes: u64,
    /// Lines of X per binding — features (feature-major) or samples (sample-major) — and
    /// the number of bindings used.
    pub x_lines_per_binding: usize,
    pub x_bindings: usize,
    /// Blocks in which feature rows are loaded, and targets and predictions moved.
    pub load_blocks: SampleBlocks,
    pub read_blocks: SampleBlocks,
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
        let (x_lines_per_binding, x_bindings) = if grid.is_some() {
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
        let max_runs = m.min(cap);
        let mask_words = n.div_ceil(SAMPLE_BLOCK);
        let tg = GATE_NEURONS;
        let tile_cap = opts
            .tile_neurons
            .map_or((TILE_FLOATS / d) / tg * tg, |t| t.div_ceil(tg) * tg)
            .clamp(tg, m.div_ceil(tg) * tg);
        let max_groups = n.div_ceil(SAMPLE_BLOCK).clamp(1, MAX_GROUPS);
        let tile = tile_cap * d;
        let scan_blocks = (cap + tile).div_ceil(SCAN_BLOCK);

        let mut f = Arena(0);
        let f_targets = f.take(n);
        let f_res = [f.take(n), f.take(n), f.take(n)];
        let f_slot_values = f.take(NSLOT * cap);
        let mut table_offset = [0usize; 4];
        let mut axis_len = [1usize; 4];
        let mut half = 0;
        if let Some(g) = grid {
            if g.axes.len() > 4 {
                return Err(Error::arg("--features", "at most four grid axes"));
            }
            half = g.half();
            for (a, table) in g.phases.iter().enumerate() {
                table_offset[a] = f.take(table.len());
                axis_len[a] = g.axes[a];
            }
        }
        let tile_f0 = f.0;
        let f_tile_cand = f.take(tile);
        let f_tile_gates = f.take(tile);
        let f_partial_g = f.take(max_groups * tile);
        let tile_f = f.0 - tile_f0;
        let f_partial_sums = f.take(n.div_ceil(WG_SIZE).max(1));
        // Partial predictions (hi, lo) of the apply chunks: chunks · n_act < APPLY_THREADS + n.
        let f_partial_pred = f.take(2 * (APPLY_THREADS + n));
        let f_scalars = f.take(SCALAR_REGION);
        let f_floats = f.0;

        let mut u = Arena(0);
        let u_batch = u.take(n);
        let u_slot_indices = u.take(NSLOT * cap);
        let u_slot_len = u.take(NSLOT);
        let u_meta = u.take(META_WORDS);
        let u_run_neuron = u.take(max_runs);
        let u_run_start = u.take(max_runs + 1);
        let u_entry_run = u.take(cap);
        let u_run_mask = u.take(max_runs * mask_words);
        let u_gate_range = u.take(2 * m);
        let u_gate_nonzero = u.take(m);
        let u_neuron_run = u.take(m);
        let tile_u0 = u.0;
        let u_tile_keys = u.take(tile);
        let chunk = n.min(opts.mask_chunk.map_or(MASK_CHUNK, |c| {
            c.max(1).div_ceil(SAMPLE_BLOCK) * SAMPLE_BLOCK
        }));
        let tile_mask_words = chunk.div_ceil(SAMPLE_BLOCK);
        let u_tile_mask = u.take(tile_cap * tile_mask_words);
        let u_scan_blocks = u.take(2 * scan_blocks);
        let tile_u = u.0 - tile_u0;
        // Not part of the dense pass's tile: the support's per-feature lists.
        let u_feat_start = u.take(d + 1);
        let u_feat_entry = u.take(cap);
        let u_feat_list = u.take(d);
        let u_total = u.0;

        for (what, elems) in [
            ("the float state buffer", f_floats),
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
        // Blocks of per-sample data moved to or from the device, `per` floats a sample.
        let blocks = |per: usize| {
            opts.move_block_samples.map_or(
                SampleBlocks::within(n, per, samples::BLOCK_BYTES, SAMPLE_BLOCK),
                |len| SampleBlocks::new(n, len),
            )
        };
        let seed = problem.gate_seed;
        let cfg = Cfg {
            n: u32_of("samples", n)?,
            d: u32_of("features", d)?,
            m: u32_of("neurons", m)?,
            slot_cap: u32_of("nonzeros", cap)?,
            grid_axis_len: axis_len.map(|v| v as u32),
            grid_table_offset: table_offset.map(|v| v as u32),
            grid_features: grid.is_some() as u32,
            grid_axes: grid.map_or(0, |g| g.axes.len() as u32),
            grid_half: half as u32,
            x_feature_major: fm as u32,
            x_lines_per_binding: u32_of("feature lines", x_lines_per_binding)?,
            gate_mode: 0,
            gate_slot: SLOT_GATE,
            gate_seed_lo: seed as u32,
            gate_seed_hi: (seed >> 32) as u32,
            mask_words: mask_words as u32,
            tile_mask_words: tile_mask_words as u32,
            max_runs: max_runs as u32,
            tile_cap: tile_cap as u32,
            zero: 0.0,
            f_targets: f_targets as u32,
            f_slot_values: f_slot_values as u32,
            f_tile_cand: f_tile_cand as u32,
            f_tile_gates: f_tile_gates as u32,
            f_partial_g: f_partial_g as u32,
            f_partial_sums: f_partial_sums as u32,
            f_partial_pred: f_partial_pred as u32,
            f_scalars: f_scalars as u32,
            u_batch: u_batch as u32,
            u_slot_indices: u_slot_indices as u32,
            u_slot_len: u_slot_len as u32,
            u_meta: u_meta as u32,
            u_run_neuron: u_run_neuron as u32,
            u_run_start: u_run_start as u32,
            u_entry_run: u_entry_run as u32,
            u_run_mask: u_run_mask as u32,
            u_neuron_run: u_neuron_run as u32,
            u_gate_range: u_gate_range as u32,
            u_gate_nonzero: u_gate_nonzero as u32,
            u_tile_keys: u_tile_keys as u32,
            u_tile_mask: u_tile_mask as u32,
            u_scan_blocks: u_scan_blocks as u32,
            u_feat_start: u_feat_start as u32,
            u_feat_entry: u_feat_entry as u32,
            u_feat_list: u_feat_list as u32,
            pad_cfg0: 0,
        };
        Ok(Layout {
            n,
            d,
            m,
            cap,
            f_res,
            f_floats,
            u_words: u_total,
            tile_cap,
            max_groups,
            chunk,
            tile_bytes: 4 * (tile_f + tile_u) as u64,
            x_lines_per_binding,
            x_bindings,
            load_blocks: blocks(d),
            read_blocks: blocks(1),
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

/// The bindings of X, filled from `src` a block of samples at a time: each buffer is created
/// mapped and the rows are written (transposed, when feature-major) straight into it, so the
/// host holds one block of rows, never a copy of the matrix.
fn load_x(
    ctx: &GpuContext,
    lay: &Layout,
    src: &dyn SampleSource,
    meter: &mut MemoryMeter,
    usage: wgpu::BufferUsages,
) -> Result<Vec<wgpu::Buffer>> {
    let (n, d) = (lay.n, lay.d);
    let fm = lay.cfg.x_feature_major != 0;
    let all = if fm { d } else { n };
    // Binding c holds lines (features or samples) lo..hi.
    let lines: Vec<std::ops::Range<usize>> = (0..lay.x_bindings)
        .map(|c| c * lay.x_lines_per_binding..((c + 1) * lay.x_lines_per_binding).min(all))
        .collect();
    let per_line = if fm { n } else { d };
    let bufs: Vec<wgpu::Buffer> = lines
        .iter()
        .map(|l| {
            let size = (l.len() * per_line * 4).max(16).div_ceil(4) as u64 * 4;
            meter.alloc(size);
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("spinr X"),
                size,
                usage,
                mapped_at_creation: true,
            })
        })
        .collect();
    {
        let mut views = bufs
            .iter()
            .map(|b| b.slice(..).get_mapped_range_mut())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Gpu(format!("mapping X for upload: {e}")))?;
        // Mapped memory is write-only (it may be write-combined): whole segments are copied in.
        let mut block_cols = Vec::new();
        samples::for_each_rows(src, lay.load_blocks, |range, rows| {
            let len = range.len();
            if fm {
                // The block transposed (d columns of `len`), then each column's segment.
                block_cols.resize(d * len, 0.0);
                samples::scatter_columns(&mut block_cols, len, 0, 0..len, rows, d);
            }
            for (view, l) in views.iter_mut().zip(&lines) {
                if fm {
                    for k in l.clone() {
                        let at = ((k - l.start) * n + range.start) * 4;
                        let seg = &block_cols[k * len..(k + 1) * len];
                        view.slice(at..at + 4 * len)
                            .copy_from_slice(bytemuck::cast_slice(seg));
                    }
                } else {
                    // Sample-major: the block's rows that fall in this binding.
                    let lo = range.start.max(l.start);
                    let hi = range.end.min(l.end);
                    if lo < hi {
                        let from = &rows[(lo - range.start) * d..(hi - range.start) * d];
                        let at = (lo - l.start) * d * 4;
                        view.slice(at..at + 4 * from.len())
                            .copy_from_slice(bytemuck::cast_slice(from));
                    }
                }
            }
            Ok(())
        })?;
    }
    for b in &bufs {
        b.unmap();
    }
    Ok(bufs)
}

/// A buffer of at least `size` bytes (16 at least, a multiple of 4), counted by `meter`.
pub(crate) fn create(
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

/// Writes the targets of samples `start..start + y.len()` into their region of `F`.
pub(crate) fn write_targets(
    queue: &wgpu::Queue,
    f: &wgpu::Buffer,
    lay: &Layout,
    start: usize,
    y: &[f32],
) {
    let at = (lay.cfg.f_targets as usize + start) as u64 * 4;
    queue.write_buffer(f, at, bytemuck::cast_slice(y));
}

/// Writes the problem's own targets into `F`, a block of samples at a time.
pub(crate) fn upload_targets(
    queue: &wgpu::Queue,
    f: &wgpu::Buffer,
    lay: &Layout,
    problem: &Problem,
) -> Result<()> {
    samples::for_each_targets(problem, lay.read_blocks, |range, y| {
        write_targets(queue, f, lay, range.start, y);
        Ok(())
    })
}

impl Buffers {
    pub fn new(
        ctx: &GpuContext,
        problem: &Problem,
        lay: &Layout,
        x_source: Option<&dyn SampleSource>,
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
        if let Some(src) = x_source {
            x = load_x(ctx, lay, src, meter, storage)?;
        }
        while x.len() < 4 {
            x.push(create(ctx, meter, "spinr X (unused)", 16, storage));
        }
        let f = create(ctx, meter, "spinr F", lay.f_floats as u64 * 4, storage);
        let u = create(ctx, meter, "spinr U", lay.u_words as u64 * 4, storage);
        // The radix select's bins, and the per-feature counters of the support by feature.
        let h_words = HIST_BINS.max(lay.cfg.d as usize);
        let h = create(ctx, meter, "spinr histogram", h_words as u64 * 4, storage);
        let staging_bytes = (4 * lay.read_blocks.block_len())
            .max(8 * lay.cap + 16)
            .max(4 * SCALAR_REGION + 8) as u64;
        let staging = create(
            ctx,
            meter,
            "spinr readback",
            staging_bytes,
            B::MAP_READ | B::COPY_DST,
        );
        // Initial contents: targets, phase tables, zeroed lengths and histogram.
        let c = &lay.cfg;
        upload_targets(&ctx.queue, &f, lay, problem)?;
        if let (1, Features::Grid(g)) = (c.grid_features, &problem.features) {
            for (a, table) in g.phases.iter().enumerate() {
                ctx.queue.write_buffer(
                    &f,
                    c.grid_table_offset[a] as u64 * 4,
                    bytemuck::cast_slice(table),
                );
            }
        }
        ctx.queue.write_buffer(
            &u,
            c.u_slot_len as u64 * 4,
            bytemuck::cast_slice(&[0u32; 32]),
        );
        ctx.queue
            .write_buffer(&h, 0, bytemuck::cast_slice(&vec![0u32; h_words]));
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
        assert_eq!((lay.x_lines_per_binding, lay.x_bindings), (3, 4));
        // Sample-major: 40-byte rows, 300 a binding.
        let rows = GpuOptions {
            feature_major: false,
            ..opts
        };
        let lay = Layout::new(&p, 5, None, &rows, &limits(1 << 30)).unwrap();
        assert_eq!((lay.x_lines_per_binding, lay.x_bindings), (300, 4));
        let lay = Layout::new(&p, 5, None, &GpuOptions::default(), &limits(1 << 30)).unwrap();
        assert_eq!((lay.x_lines_per_binding, lay.x_bindings), (10, 1));
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
        assert_eq!(lay.tile_cap % GATE_NEURONS, 0);
        assert!(lay.tile_cap >= 29);
        let c = &lay.cfg;
        let f = [
            c.f_targets,
            lay.f_res[0] as u32,
            c.f_slot_values,
            c.f_tile_cand,
            c.f_tile_gates,
            c.f_partial_g,
            c.f_partial_sums,
            c.f_scalars,
        ];
        assert!(f.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        assert!((c.f_scalars as usize + SCALAR_REGION) <= lay.f_floats);
        let u = [
            c.u_batch,
            c.u_slot_indices,
            c.u_slot_len,
            c.u_meta,
            c.u_run_neuron,
            c.u_run_start,
            c.u_entry_run,
            c.u_run_mask,
        ];
        assert!(u.windows(2).all(|w| w[0] < w[1]), "{u:?}");
        let small = GpuOptions {
            tile_neurons: Some(3),
            ..Default::default()
        };
        let lay = Layout::new(&p, 40, None, &small, &limits(1 << 30)).unwrap();
        assert_eq!(lay.tile_cap, 8);
    }
}
