// The dense pass as a tiled matrix product (ARCHITECTURE.md, "Where the cost is": the dominant cost):
//   partial_g[t, k] = Σ_a M[a, t] · X[sample(a), k],  M[a, t] = gate(tile0 + t, a) · r[a],
// over the active positions a of sample group g inside the current chunk. The gate bits come
// from tile_mask (gates.wgsl) or, with FLAG_RUNMASK, from the support passes' cached mask of
// the gate snapshot's runs, so this loop is pure multiply-add.
//
// A workgroup owns a DENSE_BLOCK_NEURONS × DENSE_BLOCK_FEATURES block of (neurons × features)
// and walks its group's samples BK at a time: the BK × DENSE_BLOCK_NEURONS block of M and the
// BK × DENSE_BLOCK_FEATURES block of X go through workgroup memory, then each thread
// accumulates an 8 × 8 register block (neurons ty·4 + {0..3}, 64 + ty·4 + {0..3}; features
// tx·4 + {0..3}, 64 + tx·4 + {0..3}): four vec4 loads per 64 FMAs. The next block's global
// loads are issued before the current block's products (register prefetch), hiding their
// latency without a second copy of the workgroup arrays.
//
// Grid: (⌈tile_neurons / DENSE_BLOCK_NEURONS⌉, ⌈d / DENSE_BLOCK_FEATURES⌉,
// op.sample_groups).
// Every workgroup writes its whole block of partial rows
// F[f_partial_g + (g·tile_cap + t)·d + k] (added to them when op.flags & FLAG_ACC: a later
// chunk), so reduce_tile (topk.wgsl) may read every group.

const BK: u32 = SAMPLE_BLOCK;  // samples per step: one gate-mask word
// The thread mapping below (16 × 16 threads, 8 × 8 registers each, 32 samples a step) is
// written for these sizes.
const_assert DENSE_BLOCK_NEURONS == 128u && DENSE_BLOCK_FEATURES == 128u;
const_assert WG_SIZE == 256u && BK == 32u;

var<workgroup> am: array<vec4<f32>, 1024>;  // BK × DENSE_BLOCK_NEURONS/4: masked residual
// BK × DENSE_BLOCK_FEATURES/4 features, by 4. Entry (row, col) lives at row·32 + (col ^ (row & 7)):
// the transposing stores (one row per lane) then fall in different banks without padding,
// which would take the two arrays past the 32 KiB D3D12 and Metal allow, and a row's 16
// consecutive columns read by a half-warp stay 16 consecutive slots.
fn bx_at(row: u32, col: u32) -> u32 {
    return row * 32u + (col ^ (row & 7u));
}
var<workgroup> bx: array<vec4<f32>, 1024>;

// Features k..k+3 of sample i: four coalesced column reads when they lie in the first
// binding (the usual case), the general path otherwise.
fn x4(i: u32, k: u32) -> vec4<f32> {
    let lines = cfg.x_lines_per_binding;
    if (cfg.grid_features == 0u && cfg.x_feature_major == 0u && k + 3u < cfg.d && i < lines) {
        let e = i * cfg.d + k;
        return vec4<f32>(x0[e], x0[e + 1u], x0[e + 2u], x0[e + 3u]);
    }
    if (cfg.grid_features == 0u && cfg.x_feature_major != 0u && k + 3u < min(cfg.d, lines)) {
        let n = cfg.n;
        let e = k * n + i;
        return vec4<f32>(x0[e], x0[e + n], x0[e + 2u * n], x0[e + 3u * n]);
    }
    return feat4(i, k);
}

// The masked residual of one BK-sample step for this thread: column u = sample lb·4 + u,
// rows = neurons lq·4 + {0..3}.
fn load_m(blk: u32, lq: u32, lb: u32, t0: u32) -> mat4x4<f32> {
    let a0 = blk * BK;
    // Gate words of this thread's four neurons (all open without gates).
    var words = vec4<u32>(0xffffffffu);
    for (var c = 0u; c < 4u; c = c + 1u) {
        let t = t0 + lq * 4u + c;
        if (t >= op.tile_neurons) {
            words[c] = 0u;
        } else if ((op.flags & FLAG_RUNMASK) != 0u) {
            // The support mask of the gate snapshot's own support: its runs are exactly the
            // neurons with gates; the others are not candidates (their rows are ignored).
            let run = U[cfg.u_neuron_run + op.tile0 + t];
            words[c] = 0u;
            if (run != 0u) {
                let word = op.chunk_start / 32u + blk;
                words[c] = U[cfg.u_run_mask + (run - 1u) * cfg.mask_words + word];
            }
        } else if (cfg.gate_mode != GATE_OPEN) {
            words[c] = U[cfg.u_tile_mask + t * cfg.tile_mask_words + blk];
        }
    }
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u = u + 1u) {
        if (a0 + lb * 4u + u < op.chunk_len) {
            r[u] = F[op.src_offset + op.chunk_start + a0 + lb * 4u + u];
        }
    }
    let b = lb * 4u;
    return mat4x4<f32>(
        vec4<f32>((words >> vec4<u32>(b)) & vec4<u32>(1u)) * r.x,
        vec4<f32>((words >> vec4<u32>(b + 1u)) & vec4<u32>(1u)) * r.y,
        vec4<f32>((words >> vec4<u32>(b + 2u)) & vec4<u32>(1u)) * r.z,
        vec4<f32>((words >> vec4<u32>(b + 3u)) & vec4<u32>(1u)) * r.w,
    );
}

// The features of one BK-sample step for this thread: sample lq (one per lane: X is
// feature-major, so a warp reads one segment per load), features lb·16 + 4q + {0..3} in
// column q.
fn load_x(blk: u32, lq: u32, lb: u32, k0: u32) -> mat4x4<f32> {
    let a = blk * BK + lq;
    if (a >= op.chunk_len) {
        return mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let i = sample_of(op.chunk_start + a);
    let k = k0 + lb * 16u;
    return mat4x4<f32>(x4(i, k), x4(i, k + 4u), x4(i, k + 8u), x4(i, k + 12u));
}

@compute @workgroup_size(WG_SIZE)
fn dense_mm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Neuron blocks vary fastest: the workgroups sharing one block of X run together.
    let t0 = wid.x * DENSE_BLOCK_NEURONS;
    let k0 = wid.y * DENSE_BLOCK_FEATURES;
    let g = wid.z;
    let d = cfg.d;
    let nb = (op.chunk_len + BK - 1u) / BK;
    // Contiguous runs of sample blocks per group, in a fixed order (deterministic sums).
    let b_lo = (g * nb) / op.sample_groups;
    let b_hi = ((g + 1u) * nb) / op.sample_groups;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let lq = lid % 32u;
    let lb = lid / 32u;

    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);

    var sm = mat4x4<f32>();
    var sx = mat4x4<f32>();
    if (b_lo < b_hi) {
        sm = load_m(b_lo, lq, lb, t0);
        sx = load_x(b_lo, lq, lb, k0);
    }
    for (var blk = b_lo; blk < b_hi; blk = blk + 1u) {
        let mb = lb * 4u * 32u + lq;
        am[mb] = sm[0];
        am[mb + 32u] = sm[1];
        am[mb + 64u] = sm[2];
        am[mb + 96u] = sm[3];
        bx[bx_at(lq, lb * 4u)] = sx[0];
        bx[bx_at(lq, lb * 4u + 1u)] = sx[1];
        bx[bx_at(lq, lb * 4u + 2u)] = sx[2];
        bx[bx_at(lq, lb * 4u + 3u)] = sx[3];
        workgroupBarrier();
        if (blk + 1u < b_hi) {
            sm = load_m(blk + 1u, lq, lb, t0);
            sx = load_x(blk + 1u, lq, lb, k0);
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let ml = am[kk * 32u + ty];
            let mh = am[kk * 32u + 16u + ty];
            let xl = bx[bx_at(kk, tx)];
            let xh = bx[bx_at(kk, 16u + tx)];
            c00 = fma(vec4<f32>(ml.x), xl, c00); c01 = fma(vec4<f32>(ml.x), xh, c01);
            c10 = fma(vec4<f32>(ml.y), xl, c10); c11 = fma(vec4<f32>(ml.y), xh, c11);
            c20 = fma(vec4<f32>(ml.z), xl, c20); c21 = fma(vec4<f32>(ml.z), xh, c21);
            c30 = fma(vec4<f32>(ml.w), xl, c30); c31 = fma(vec4<f32>(ml.w), xh, c31);
            c40 = fma(vec4<f32>(mh.x), xl, c40); c41 = fma(vec4<f32>(mh.x), xh, c41);
            c50 = fma(vec4<f32>(mh.y), xl, c50); c51 = fma(vec4<f32>(mh.y), xh, c51);
            c60 = fma(vec4<f32>(mh.z), xl, c60); c61 = fma(vec4<f32>(mh.z), xh, c61);
            c70 = fma(vec4<f32>(mh.w), xl, c70); c71 = fma(vec4<f32>(mh.w), xh, c71);
        }
        workgroupBarrier();
    }

    let out = cfg.f_partial_g + g * cfg.tile_cap * d;
    let tl = t0 + ty * 4u;
    let th = t0 + 64u + ty * 4u;
    let kl = k0 + tx * 4u;
    let kh = k0 + 64u + tx * 4u;
    store4(out, tl, kl, c00); store4(out, tl, kh, c01);
    store4(out, tl + 1u, kl, c10); store4(out, tl + 1u, kh, c11);
    store4(out, tl + 2u, kl, c20); store4(out, tl + 2u, kh, c21);
    store4(out, tl + 3u, kl, c30); store4(out, tl + 3u, kh, c31);
    store4(out, th, kl, c40); store4(out, th, kh, c41);
    store4(out, th + 1u, kl, c50); store4(out, th + 1u, kh, c51);
    store4(out, th + 2u, kl, c60); store4(out, th + 2u, kh, c61);
    store4(out, th + 3u, kl, c70); store4(out, th + 3u, kh, c71);
}

// Partial row t, features k..k+3 (those inside the tile and d), set or accumulated.
fn store4(out: u32, t: u32, k: u32, v: vec4<f32>) {
    let d = cfg.d;
    if (t >= op.tile_neurons) {
        return;
    }
    let row = out + t * d;
    for (var c = 0u; c < 4u; c = c + 1u) {
        if (k + c < d) {
            if ((op.flags & FLAG_ACC) != 0u) {
                F[row + k + c] = F[row + k + c] + v[c];
            } else {
                F[row + k + c] = v[c];
            }
        }
    }
}
