//! The Rust ↔ WGSL interface, defined once: the two uniform blocks ([`Cfg`], [`Op`]), the
//! bindings and every constant both sides use. [`wgsl_prelude`] writes them as WGSL and
//! `compose_shader` puts that in front of every kernel file, so no shader spells a layout, a
//! binding or a shared constant of its own (WGSL has no includes). `tests/shader_interface.rs`
//! parses the composed modules with naga and checks every member's name, type and byte offset
//! and every constant against this file.

use bytemuck::{Pod, Zeroable};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};

/// How WGSL spells a Rust field type of a shared struct.
pub trait WgslType {
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}

impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}

/// Uniform-buffer arrays need a 16-byte element stride; a `vec4<u32>` has the bytes of a
/// `[u32; 4]` (at a 16-byte aligned offset, which the drift test checks).
impl WgslType for [u32; 4] {
    const WGSL: &'static str = "vec4<u32>";
}

/// One member of a shared struct as Rust lays it out.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name: &'static str,
    pub wgsl_type: &'static str,
    pub offset: usize,
    pub doc: &'static str,
}

/// A `#[repr(C)]` struct that the shaders see as a WGSL struct of the same name.
pub trait SharedStruct: Pod {
    const NAME: &'static str;
    const DOC: &'static str;
    const MEMBERS: &'static [Member];
    const SIZE: usize = size_of::<Self>();
}

/// Defines a `#[repr(C)]` struct and its [`SharedStruct`] description from one declaration.
macro_rules! shared_struct {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl SharedStruct for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static str = concat!($($sdoc, "\n",)*);
            const MEMBERS: &'static [Member] = &[
                $(Member {
                    name: stringify!($field),
                    wgsl_type: <$ty as WgslType>::WGSL,
                    offset: offset_of!($name, $field),
                    doc: concat!($($doc, "\n",)*),
                },)*
            ];
        }
    };
}

pub(crate) use shared_struct;

/// A constant both sides use (a `u32` in WGSL).
#[derive(Clone, Copy, Debug)]
pub struct SharedConst {
    pub name: &'static str,
    pub value: u64,
    pub doc: &'static str,
}

/// Defines Rust constants and their [`SHARED_CONSTS`] list from one declaration.
macro_rules! shared_consts {
    ( $( $(#[doc = $doc:literal])* pub const $name:ident : $ty:ty = $val:expr; )* ) => {
        $(
            $(#[doc = $doc])*
            pub const $name: $ty = $val;
            const _: () = assert!($name as u64 <= u32::MAX as u64, "WGSL constants are u32");
        )*
        /// Every shared constant, in declaration order.
        pub const SHARED_CONSTS: &[SharedConst] = &[
            $(SharedConst { name: stringify!($name), value: $name as u64, doc: concat!($($doc, "\n",)*) },)*
        ];
    };
}

/// Scalars at the start of the scalar region that the support passes write (`Op::scalar`).
pub const SCALARS: usize = 16;

shared_consts! {
    /// Threads per workgroup of every kernel.
    pub const WG_SIZE: usize = 256;
    /// Samples per block: one 32-bit gate-mask word.
    pub const SAMPLE_BLOCK: usize = 32;
    /// Neurons per gate workgroup (`mask`, random-gate `tile_mask`): SAMPLE_BLOCK · GATE_NEURONS
    /// = WG_SIZE, one (sample, neuron) pair per thread.
    pub const GATE_NEURONS: usize = 8;
    /// Sample blocks per `tile_mask` workgroup.
    pub const TILE_MASK_BLOCKS: usize = 4;
    /// Neurons per `tile_mask` workgroup with weight gates.
    pub const TILE_MASK_NEURONS: usize = 64;
    /// `dense_mm`'s block of neurons × features per workgroup.
    pub const DENSE_BLOCK_NEURONS: usize = 128;
    pub const DENSE_BLOCK_FEATURES: usize = 128;
    /// Elements per `count` / `scatter` workgroup of the ordered compaction.
    pub const SCAN_BLOCK: usize = 1024;
    /// Entries of one feature that `grad_f` sums in one sweep over the samples.
    pub const GRAD_F_GROUP: usize = 4;
    /// Bins of one radix-select digit (11 bits) and of the histogram buffer `H`.
    pub const HIST_BINS: usize = 2048;

    /// `Cfg::gate_mode`: every gate open (Gaussian sensing).
    pub const GATE_OPEN: u32 = 0;
    /// `Cfg::gate_mode`: the problem's random gate vectors (generated from the gate seed).
    pub const GATE_RANDOM: u32 = 1;
    /// `Cfg::gate_mode`: the weights in slot `Cfg::gate_slot` (sequential mode).
    pub const GATE_WEIGHTS: u32 = 2;

    /// `Op::flags`, apply_fin: subtract the targets.
    pub const FLAG_SUB_Y: u32 = 1;
    /// `Op::flags`, apply_fin: store the output vector at `Op::dst_offset`.
    pub const FLAG_STORE: u32 = 2;
    /// `Op::flags`, reduce: the squared norm of slot `Op::slot_a` instead of a sum of partials.
    pub const FLAG_SLOT_SQ: u32 = 4;
    /// `Op::flags`, refinement chain: the workgroup returns once `META_STOP` is set.
    pub const FLAG_GUARD: u32 = 8;
    /// `Op::flags`, axpy and reduce_tile: μ from the scalar `SC_MU` instead of `Op::mu`.
    pub const FLAG_MU_SC: u32 = 16;
    /// `Op::flags`, copy_slot: only if `META_ACC` is odd.
    pub const FLAG_IF_ODD: u32 = 32;
    /// `Op::flags`, dense_mm: add to the partial rows (a later chunk of samples).
    pub const FLAG_ACC: u32 = 64;
    /// `Op::flags`, dense_mm: gate words from the cached support-run mask.
    pub const FLAG_RUNMASK: u32 = 128;
    /// `Op::flags`, refine_mu: keep the step size in `SC_MU` (Armijo: the normalised step
    /// once, then only halved); only ‖g‖² is computed.
    pub const FLAG_MU_KEEP: u32 = 256;

    /// `u_meta` word: runs of the support grouped last (`runs`).
    pub const META_RUNS: usize = 0;
    /// `u_meta` word, radix select: rank still needed inside the selected prefix.
    pub const META_K: usize = 1;
    /// `u_meta` word, radix select: digits selected so far.
    pub const META_PREFIX: usize = 2;
    /// `u_meta` word, radix select: the threshold key is known.
    pub const META_DONE: usize = 3;
    /// `u_meta` word, radix select: the threshold key.
    pub const META_KSTAR: usize = 4;
    /// `u_meta` word, radix select: how many keys equal to the threshold are kept.
    pub const META_NEED: usize = 5;
    /// `u_meta` word, refinement batch: set by the first step not accepted.
    pub const META_STOP: usize = 6;
    /// `u_meta` word, refinement batch: steps accepted so far (read back with `META_STOP`).
    pub const META_ACC: usize = META_STOP + 1;
    /// `u_meta` word, support by feature: features that have entries (`u_feat_list`).
    pub const META_FEATS: usize = META_ACC + 1;
    /// Words of the `u_meta` region.
    pub const META_WORDS: usize = 16;

    /// Scalar (offset into `F[f_scalars..]`) of a refinement batch: the current step's ‖g‖².
    pub const SC_GN: usize = 4;
    /// Refinement scalar: the current step's ‖A g‖².
    pub const SC_CURV: usize = 5;
    /// Refinement scalar: the current step's μ.
    pub const SC_MU: usize = 6;
    /// Refinement scalar: the loss at the current iterate.
    pub const SC_FV: usize = 7;
    /// Refinement scalar: the loss at the batch's first iterate, when the batch computed it.
    pub const SC_F0: usize = 8;
    /// First refinement record: REC_LEN floats per step (‖g‖², ‖A g‖², μ, f(trial), accepted),
    /// after the scalars of the support passes.
    pub const SC_REC: usize = SCALARS;
    pub const REC_LEN: usize = 5;
}

shared_struct! {
    /// Fixed for a backend's lifetime (problem sizes, region offsets); rewritten on set_gates.
    /// `f_*` are offsets (in floats) into the float buffer `F`, `u_*` offsets (in words) into
    /// the index buffer `U`.
    pub struct Cfg {
        /// Samples.
        pub n: u32,
        /// Features per sample.
        pub d: u32,
        /// Neurons.
        pub m: u32,
        /// Entries a slot holds (s).
        pub slot_cap: u32,
        /// Grid features: samples along each axis (row-major, the last axis fastest).
        pub grid_axis_len: [u32; 4],
        /// Grid features: `F` offset of each axis's phase table.
        pub grid_table_offset: [u32; 4],
        /// 1: Fourier features of a grid generated on the fly; 0: X is bound as a matrix.
        pub grid_features: u32,
        /// Grid axes in use (at most four).
        pub grid_axes: u32,
        /// Grid features: sines for k < grid_half, cosines above.
        pub grid_half: u32,
        /// 1: X feature-major (X[i, k] at k·n + i); 0: sample-major (at i·d + k).
        pub x_feature_major: u32,
        /// Lines of X per binding: features (feature-major) or samples (sample-major).
        pub x_lines_per_binding: u32,
        /// GATE_OPEN, GATE_RANDOM or GATE_WEIGHTS.
        pub gate_mode: u32,
        /// Slot of the weight-gate snapshot.
        pub gate_slot: u32,
        /// Seed of the random gates, low and high word.
        pub gate_seed_lo: u32,
        pub gate_seed_hi: u32,
        /// Words per run of the support-run gate mask (one bit per active sample).
        pub mask_words: u32,
        /// Words per neuron of the dense-pass tile mask (one bit per sample of a chunk).
        pub tile_mask_words: u32,
        /// Runs (neurons) a support can have: min(m, slot_cap).
        pub max_runs: u32,
        /// Neurons per dense-pass tile, at most.
        pub tile_cap: u32,
        /// Always 0.0; opaque to shader compilers (see `acc2` in common.wgsl).
        pub zero: f32,
        /// Targets y (n).
        pub f_targets: u32,
        /// Slot values (slots × slot_cap).
        pub f_slot_values: u32,
        /// Candidates c = w − μ G of the current tile.
        pub f_tile_cand: u32,
        /// Random gate vectors of the current tile (tile_cap × d).
        pub f_tile_gates: u32,
        /// Partial G rows per sample group (groups × tile_cap × d).
        pub f_partial_g: u32,
        /// Per-workgroup partial sums of the support passes.
        pub f_partial_sums: u32,
        /// Partial predictions (hi, lo) of the apply chunks.
        pub f_partial_pred: u32,
        /// Scalars read back (SCALARS, then the refinement records from SC_REC).
        pub f_scalars: u32,
        /// Sample ids of the minibatch.
        pub u_batch: u32,
        /// Slot indices (slots × slot_cap).
        pub u_slot_indices: u32,
        /// Slot lengths.
        pub u_slot_len: u32,
        /// Scratch words (META_*).
        pub u_meta: u32,
        /// Neuron of each run of the current support.
        pub u_run_neuron: u32,
        /// First entry of each run (and one past the last run).
        pub u_run_start: u32,
        /// Run of each entry of the current support.
        pub u_entry_run: u32,
        /// Gate mask of the support's runs (max_runs × mask_words).
        pub u_run_mask: u32,
        /// Neuron → 1 + its run in the support-run mask (0: not a run).
        pub u_neuron_run: u32,
        /// Entry range of each neuron in the gate snapshot: starts (m), then ends (m).
        pub u_gate_range: u32,
        /// 1 where a neuron's gate snapshot has a nonzero value (it is a candidate).
        pub u_gate_nonzero: u32,
        /// Selection keys of the current tile's candidates.
        pub u_tile_keys: u32,
        /// Gate mask of the current tile (tile_cap × tile_mask_words).
        pub u_tile_mask: u32,
        /// (greater, equal) counts and prefixes per scan block.
        pub u_scan_blocks: u32,
        /// Support by feature: first position of each feature's list (d + 1).
        pub u_feat_start: u32,
        /// Support by feature: the entries, feature by feature (slot_cap).
        pub u_feat_entry: u32,
        /// Support by feature: the features that have entries, ascending (META_FEATS of them).
        pub u_feat_list: u32,
        /// Pad Cfg to whole 16-byte rows.
        pub pad_cfg0: u32,
    }
}

shared_struct! {
    /// Per dispatch (dynamic offset): what one job works on. Each kernel reads only the
    /// members whose documentation names it (on the Rust side `Op::active` and one
    /// constructor per kernel fill them).
    pub struct Op {
        /// Input slot: the support (runs, apply, grad), the source (axpy, copy_slot, reduce
        /// with FLAG_SLOT_SQ), the gradient (refine_mu), the running top-s buffer (top-s).
        pub slot_a: u32,
        /// Second input slot: axpy's b; add_w's w.
        pub slot_b: u32,
        /// Output slot: grad, axpy, copy_slot, the merged top-s (scan, scatter).
        pub slot_out: u32,
        /// Active samples (the minibatch or all).
        pub n_act: u32,
        /// 1: active position a is sample U[u_batch + a]; 0: sample a.
        pub batched: u32,
        /// FLAG_* bits.
        pub flags: u32,
        /// Step size: axpy (out = a − μ b), reduce_tile (c = −μ G).
        pub mu: f32,
        /// `F` offset of the input vector: the residual (grad, dense_mm), the values summed
        /// (reduce).
        pub src_offset: u32,
        /// `F` offset of apply_fin's output vector (FLAG_STORE).
        pub dst_offset: u32,
        /// Dense pass: first neuron of the tile.
        pub tile0: u32,
        /// Dense pass: neurons in the tile.
        pub tile_neurons: u32,
        /// Dense pass: candidates in the tile (tile_neurons · d), merged by the top-s kernels.
        pub tile_elems: u32,
        /// Dense pass: sample groups of dense_mm's partial rows.
        pub sample_groups: u32,
        /// Dense pass: first active position of the sample chunk (tile_mask, dense_mm).
        pub chunk_start: u32,
        /// Dense pass: active positions in the chunk.
        pub chunk_len: u32,
        /// Top-s: entries to keep.
        pub top_s: u32,
        /// Top-s: digit of the radix select (0, 1, 2; hist, select_digit).
        pub radix_pass: u32,
        /// Top-s: blocks of SCAN_BLOCK elements (count, scan, scatter).
        pub scan_blocks: u32,
        /// apply, apply_fin: chunks the support's runs are split into.
        pub run_chunks: u32,
        /// reduce: floats summed at src_offset; refine_mu, refine_decide: partial sums at
        /// f_partial_sums.
        pub partials: u32,
        /// reduce: the scalar written (F[f_scalars + scalar]).
        pub scalar: u32,
        /// refine_decide: the step's index in the batch (its record).
        pub step: u32,
        /// Pad Op to whole 16-byte rows.
        pub pad0: u32,
        pub pad1: u32,
    }
}

/// What a binding is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cfg,
    Op,
    /// One of the four bindings of the feature matrix.
    X(usize),
    F,
    U,
    H,
}

/// A binding's address space and access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Uniform,
    /// A uniform block at a dynamic offset (one per dispatch).
    UniformDynamic,
    Read,
    ReadWrite,
}

/// One binding of group 0.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub index: u32,
    pub name: &'static str,
    pub resource: Resource,
    pub access: Access,
    pub wgsl_type: &'static str,
    pub doc: &'static str,
}

const fn bind(
    index: u32,
    name: &'static str,
    resource: Resource,
    access: Access,
    wgsl_type: &'static str,
    doc: &'static str,
) -> Binding {
    Binding {
        index,
        name,
        resource,
        access,
        wgsl_type,
        doc,
    }
}

/// Every binding of the kernels' one bind group.
pub const BINDINGS: &[Binding] = &[
    bind(0, "cfg", Resource::Cfg, Access::Uniform, "Cfg", ""),
    bind(1, "op", Resource::Op, Access::UniformDynamic, "Op", ""),
    bind(
        2,
        "x0",
        Resource::X(0),
        Access::Read,
        "array<f32>",
        "Dense features, feature-major (x_feature_major = 1: X[i, k] at k·n + i, a warp of \
         consecutive samples reads one segment) or sample-major (X[i, k] at i·d + k, for \
         minibatches), split by columns or rows across up to four bindings (binding-size \
         limits).",
    ),
    bind(3, "x1", Resource::X(1), Access::Read, "array<f32>", ""),
    bind(4, "x2", Resource::X(2), Access::Read, "array<f32>", ""),
    bind(5, "x3", Resource::X(3), Access::Read, "array<f32>", ""),
    bind(
        6,
        "F",
        Resource::F,
        Access::ReadWrite,
        "array<f32>",
        "All float state (targets, residuals, slot values, phase tables, tile buffers, \
         scalars).",
    ),
    bind(
        7,
        "U",
        Resource::U,
        Access::ReadWrite,
        "array<u32>",
        "All integer state (batch, slot indices and lengths, runs, gate masks, keys, scan \
         blocks).",
    ),
    bind(
        8,
        "H",
        Resource::H,
        Access::ReadWrite,
        "array<atomic<u32>>",
        "Radix-select histogram, HIST_BINS words, and the per-feature counters of the support by \
         feature (max(HIST_BINS, d) words, zero between kernels; global atomics are portable; f32 atomics \
         are not).",
    ),
];

impl Op {
    /// An op over `n_act` active samples (`batched`: the minibatch list), nothing else set.
    pub fn active(n_act: usize, batched: bool) -> Op {
        Op {
            n_act: n_act as u32,
            batched: batched as u32,
            ..Op::default()
        }
    }

    /// `runs`, `mask`: group the support of slot `v` into runs and evaluate their gates.
    pub fn runs(self, v: u32) -> Op {
        Op { slot_a: v, ..self }
    }

    /// `apply`, `apply_fin`: `A_S v [− y]` over the support of slot `v`, its runs split into
    /// `run_chunks`; stored at `F[dst_offset]` with FLAG_STORE.
    pub fn apply(self, v: u32, flags: u32, dst_offset: u32, run_chunks: u32) -> Op {
        Op {
            slot_a: v,
            flags: self.flags | flags,
            dst_offset,
            run_chunks,
            ..self
        }
    }

    /// `reduce`: the sum of the `partials` floats at `F[src_offset]` into scalar `scalar`.
    pub fn reduce_sum(self, src_offset: u32, partials: u32, scalar: u32) -> Op {
        Op {
            src_offset,
            partials,
            scalar,
            ..self
        }
    }

    /// `reduce` with FLAG_SLOT_SQ: the squared norm of slot `slot` into scalar `scalar`.
    pub fn reduce_slot_sq(self, slot: u32, scalar: u32) -> Op {
        Op {
            slot_a: slot,
            flags: self.flags | FLAG_SLOT_SQ,
            scalar,
            ..self
        }
    }

    /// `grad`: `g = A_Sᵀ r` on the support of slot `v` (residual at `F[residual]`) into
    /// slot `g`.
    pub fn grad(self, v: u32, g: u32, residual: u32) -> Op {
        Op {
            slot_a: v,
            slot_out: g,
            src_offset: residual,
            ..self
        }
    }

    /// `axpy`: slot `out` = slot `a` − μ · slot `b` (same support).
    pub fn axpy(self, a: u32, b: u32, out: u32, mu: f32) -> Op {
        Op {
            slot_a: a,
            slot_b: b,
            slot_out: out,
            mu,
            ..self
        }
    }

    /// `copy_slot`: slot `dst` = slot `src`.
    pub fn copy_slot(self, src: u32, dst: u32) -> Op {
        Op {
            slot_a: src,
            slot_out: dst,
            ..self
        }
    }

    /// `refine_mu`: ‖g‖² of slot `g`, ‖A g‖² from `partials` partial sums, and μ (with
    /// FLAG_MU_KEEP only ‖g‖²; `partials` unused).
    pub fn refine_mu(self, g: u32, partials: u32) -> Op {
        Op {
            slot_a: g,
            partials,
            ..self
        }
    }

    /// `refine_decide`: f(trial) from `partials` partial sums, the Armijo test, record `step`.
    pub fn refine_decide(self, partials: u32, step: u32) -> Op {
        Op {
            partials,
            step,
            ..self
        }
    }
}

/// `doc` as `//` comment lines of at most 100 columns.
fn comment(out: &mut String, indent: &str, doc: &str) {
    let mut line = String::new();
    for word in doc.split_whitespace() {
        if !line.is_empty() && indent.len() + 3 + line.len() + 1 + word.len() > 100 {
            let _ = writeln!(out, "{indent}// {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}// {line}");
    }
}

fn struct_wgsl<S: SharedStruct>(out: &mut String) {
    comment(out, "", S::DOC);
    let _ = writeln!(out, "struct {} {{", S::NAME);
    for m in S::MEMBERS {
        comment(out, "    ", m.doc);
        let _ = writeln!(out, "    {}: {},", m.name, m.wgsl_type);
    }
    out.push_str("}\n\n");
}

/// The WGSL declarations of this module: structs, bindings, constants. Every composed shader
/// starts with it.
pub fn wgsl_prelude() -> String {
    let mut out = String::from(
        "// Generated from src/backend/gpu/interface.rs (structs, bindings, shared constants):\n\
         // edit it there.\n\n",
    );
    struct_wgsl::<Cfg>(&mut out);
    struct_wgsl::<Op>(&mut out);
    for b in BINDINGS {
        comment(&mut out, "", b.doc);
        let space = match b.access {
            Access::Uniform | Access::UniformDynamic => "uniform",
            Access::Read => "storage, read",
            Access::ReadWrite => "storage, read_write",
        };
        let _ = writeln!(
            out,
            "@group(0) @binding({}) var<{space}> {}: {};",
            b.index, b.name, b.wgsl_type
        );
    }
    out.push('\n');
    for c in SHARED_CONSTS {
        comment(&mut out, "", c.doc);
        let _ = writeln!(out, "const {}: u32 = {}u;", c.name, c.value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_blocks_are_whole_16_byte_rows() {
        assert_eq!(Cfg::SIZE % 16, 0);
        assert_eq!(Op::SIZE % 16, 0);
    }

    #[test]
    fn the_prelude_names_every_constant_once() {
        let p = wgsl_prelude();
        for c in SHARED_CONSTS {
            assert_eq!(
                p.matches(&format!("const {}: ", c.name)).count(),
                1,
                "{}",
                c.name
            );
        }
        assert_eq!(GATE_NEURONS * SAMPLE_BLOCK, WG_SIZE);
        assert_eq!(SCAN_BLOCK % WG_SIZE, 0);
    }
}
