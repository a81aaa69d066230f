// Gate evaluation and the fused dense pass (ARCHITECTURE.md, "The IHT step" step 2 and "Where the cost is").
//
// A workgroup handles blocks of SAMPLE_BLOCK samples against GATE_NEURONS neurons: thread
// (b, t) = (lid / GATE_NEURONS, lid % GATE_NEURONS). Phase 1 computes the pre-activations
// x_b · h_t (random gates: a tiled product through workgroup memory; weight gates: a sparse
// dot), phase 2 accumulates G[k, t] += Σ_b x_bk · 1[pre_bt > 0] · r_b for features
// k = lid, lid + WG_SIZE, ... into the workgroup's own partial-G rows (read-modify-write, no
// other workgroup touches them): eight accumulators per thread at a time, any d in one
// workgroup, phase 1 done once per block. Neither the n × tile gate matrix nor the n × d
// features are ever stored.

const KC: u32 = 64u;    // features per phase-1 chunk
const_assert SAMPLE_BLOCK * GATE_NEURONS == WG_SIZE;

var<workgroup> xs: array<vec4<f32>, SAMPLE_BLOCK * KC / 4u>;  // features of the block, by 4
var<workgroup> hs: array<vec4<f32>, GATE_NEURONS * KC / 4u>;  // gate entries, by 4
var<workgroup> smp: array<u32, SAMPLE_BLOCK>;    // sample ids of the block
var<workgroup> hkey: array<u32, GATE_NEURONS>;   // gate keys of the workgroup's neurons (mask)
var<workgroup> mbits: array<atomic<u32>, GATE_NEURONS>;
var<workgroup> flag_w: u32;

// Pre-activation x_{smp[b]} · g_t of this thread's pair, random gates. The gate entries come
// from the tile table at F[tbase + t·d + k] (dense pass) or from the hash (mask kernel).
fn pre_random(lid: u32, nvalid: u32, from_table: bool, tbase: u32) -> f32 {
    let b = lid / GATE_NEURONS;
    let t = lid % GATE_NEURONS;
    let d = cfg.d;
    var acc = 0.0;
    for (var k0 = 0u; k0 < d; k0 = k0 + KC) {
        // Each thread fills two vec4 of features and half a vec4 of gate entries.
        for (var u = 0u; u < 2u; u = u + 1u) {
            let e = lid + u * WG_SIZE;
            let bb = e / (KC / 4u);
            let k = k0 + (e % (KC / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (bb < nvalid) {
                v = feat4(smp[bb], k);
            }
            xs[e] = v;
        }
        if (lid < GATE_NEURONS * KC / 4u) {
            let tt = lid / (KC / 4u);
            let k = k0 + (lid % (KC / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            for (var c = 0u; c < 4u; c = c + 1u) {
                if (k + c < d) {
                    if (from_table) {
                        v[c] = F[tbase + tt * d + k + c];
                    } else {
                        v[c] = gate_normal(hkey[tt], k + c);
                    }
                }
            }
            hs[lid] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KC / 4u; kk = kk + 1u) {
            acc = acc + dot(xs[b * (KC / 4u) + kk], hs[t * (KC / 4u) + kk]);
        }
        workgroupBarrier();
    }
    return acc;
}

// The (sample, neuron) pair of thread lid. Random gates: pre_random's layout. Weight gates:
// a warp takes 32 consecutive samples of one neuron, so its feature reads are one segment
// of the feature-major X and its gate entries are uniform.
fn pair_of(lid: u32) -> vec2<u32> {
    if (cfg.gate_mode == GATE_WEIGHTS) {
        return vec2<u32>(lid % SAMPLE_BLOCK, lid / SAMPLE_BLOCK);
    }
    return vec2<u32>(lid / GATE_NEURONS, lid % GATE_NEURONS);
}

// Random gate vectors of the tile's neurons: F[f_tile_gates + t·d + k] = g_{tile0+t}[k].
@compute @workgroup_size(WG_SIZE)
fn gen_h(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let e = wg_linear(wid, nwg) * WG_SIZE + lid;
    let d = cfg.d;
    if (e >= op.tile_neurons * d) {
        return;
    }
    let t = e / d;
    F[cfg.f_tile_gates + e] = gate_normal(gate_key(op.tile0 + t), e % d);
}

// Gate bits of the current support's runs: mask[r][a / 32] bit a % 32 = gate of run r at
// active position a. Grid: (run group, sample block, sample block high part): run groups vary
// fastest, so the workgroups reading one sample block's features run together (L2 hits).
@compute @workgroup_size(WG_SIZE)
fn mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = wid.y + wid.z * nwg.y;
    let rg = wid.x;
    if (lid == 0u) {
        flag_w = U[cfg.u_meta + META_RUNS];
    }
    let nruns = workgroupUniformLoad(&flag_w);
    let base = blk * SAMPLE_BLOCK;
    if (rg * GATE_NEURONS >= nruns || base >= op.n_act) {
        return;
    }
    let nvalid = min(SAMPLE_BLOCK, op.n_act - base);
    if (lid < SAMPLE_BLOCK) {
        smp[lid] = sample_of(min(base + lid, op.n_act - 1u));
    }
    if (lid < GATE_NEURONS) {
        let r = min(rg * GATE_NEURONS + lid, nruns - 1u);
        hkey[lid] = gate_key(U[cfg.u_run_neuron + r]);
        atomicStore(&mbits[lid], 0u);
    }
    workgroupBarrier();
    let bt = pair_of(lid);
    let b = bt.x;
    let t = bt.y;
    let r = rg * GATE_NEURONS + t;
    var open = false;
    if (cfg.gate_mode == GATE_RANDOM) {
        open = pre_random(lid, nvalid, false, 0u) > 0.0;
    } else if (cfg.gate_mode == GATE_WEIGHTS) {
        if (r < nruns && b < nvalid) {
            open = pre_weights(smp[b], U[cfg.u_run_neuron + r]) > 0.0;
        }
    } else {
        open = true;
    }
    if (open && b < nvalid && r < nruns) {
        atomicOr(&mbits[t], 1u << b);
    }
    workgroupBarrier();
    if (lid < GATE_NEURONS && rg * GATE_NEURONS + lid < nruns) {
        let run = rg * GATE_NEURONS + lid;
        U[cfg.u_run_mask + run * cfg.mask_words + blk] = atomicLoad(&mbits[lid]);
    }
}

// Gate bits of one dense-pass tile for a chunk of active samples: bit b of
// U[u_tile_mask + t·tile_mask_words + blk] = gate of neuron tile0 + t at active position
// op.chunk_start + 32·blk + b. The matrix product (dense.wgsl) then needs no gate arithmetic.
// A workgroup takes TILE_MASK_BLOCKS sample blocks × TILE_MASK_NEURONS neurons (weight gates;
// GATE_NEURONS for random gates). With weight gates each of the 8 warps evaluates
// TILE_MASK_NEURONS / 8 neurons in turn, each at TILE_MASK_BLOCKS samples at once (the gate
// entries loaded once, independent feature reads in flight); the many neurons per workgroup
// let the samples' feature segments be read from L2 once per TILE_MASK_NEURONS neurons rather
// than per GATE_NEURONS.
// Grid: (neuron groups, groups of TILE_MASK_BLOCKS sample blocks, high part of the second).
// pre_weights4 takes four samples; mbits4 holds TILE_MASK_BLOCKS × TILE_MASK_NEURONS words.
const_assert TILE_MASK_BLOCKS == 4u && TILE_MASK_BLOCKS * TILE_MASK_NEURONS <= WG_SIZE;
var<workgroup> smp4: array<u32, TILE_MASK_BLOCKS * SAMPLE_BLOCK>;  // sample ids
// mbits4 and set_bit come from bits_atomic.wgsl / bits_subgroup.wgsl.

@compute @workgroup_size(WG_SIZE)
fn tile_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    // Neuron groups vary fastest, so the workgroups that read one sample group's feature
    // segments run together and find them in L2.
    let blk0 = (wid.y + wid.z * nwg.y) * TILE_MASK_BLOCKS;
    let nw = select(GATE_NEURONS, TILE_MASK_NEURONS, cfg.gate_mode == GATE_WEIGHTS);
    let t0 = wid.x * nw;
    if (blk0 * SAMPLE_BLOCK >= op.chunk_len || t0 >= op.tile_neurons) {
        return;
    }
    let left = op.chunk_len - blk0 * SAMPLE_BLOCK;
    let nblk = min(TILE_MASK_BLOCKS, (left + SAMPLE_BLOCK - 1u) / SAMPLE_BLOCK);
    if (lid < TILE_MASK_BLOCKS * SAMPLE_BLOCK) {
        smp4[lid] = sample_of(op.chunk_start + min(blk0 * SAMPLE_BLOCK + lid, op.chunk_len - 1u));
    }
    if (lid < TILE_MASK_BLOCKS * nw) {
        atomicStore(&mbits4[lid], 0u);
    }
    workgroupBarrier();
    if (cfg.gate_mode == GATE_WEIGHTS) {
        // A warp: 32 consecutive samples (one segment of each feature column), one neuron
        // at a time.
        let b = lid % SAMPLE_BLOCK;
        let sb = SAMPLE_BLOCK;
        let i = vec4<u32>(smp4[b], smp4[sb + b], smp4[2u * sb + b], smp4[3u * sb + b]);
        for (var tt = 0u; tt < TILE_MASK_NEURONS / 8u; tt = tt + 1u) {
            let t = (lid / SAMPLE_BLOCK) * (TILE_MASK_NEURONS / 8u) + tt;
            var pre = vec4<f32>(0.0);
            let tvalid = t0 + t < op.tile_neurons;
            if (tvalid) {
                pre = pre_weights4(i, op.tile0 + t0 + t);
            }
            // Outside the branch: set_bit may be a subgroup operation.
            for (var u = 0u; u < TILE_MASK_BLOCKS; u = u + 1u) {
                let inside = u < nblk && (blk0 + u) * SAMPLE_BLOCK + b < op.chunk_len;
                let open = tvalid && inside && pre[u] > 0.0;
                set_bit(u * TILE_MASK_NEURONS + t, open, b);
            }
        }
    } else {
        // Random gates: the shared-memory product of pre_random, one block at a time.
        let b = lid / GATE_NEURONS;
        let t = lid % GATE_NEURONS;
        for (var u = 0u; u < nblk; u = u + 1u) {
            if (lid < SAMPLE_BLOCK) {
                smp[lid] = smp4[u * SAMPLE_BLOCK + lid];
            }
            workgroupBarrier();
            let nvalid = min(SAMPLE_BLOCK, op.chunk_len - (blk0 + u) * SAMPLE_BLOCK);
            let open = pre_random(lid, nvalid, true, cfg.f_tile_gates + t0 * cfg.d) > 0.0;
            if (open && t0 + t < op.tile_neurons && b < nvalid) {
                atomicOr(&mbits4[u * GATE_NEURONS + t], 1u << b);
            }
            workgroupBarrier();
        }
    }
    workgroupBarrier();
    if (lid < TILE_MASK_BLOCKS * nw) {
        let u = lid / nw;
        let tt = lid % nw;
        if (u < nblk && t0 + tt < op.tile_neurons) {
            let word = (t0 + tt) * cfg.tile_mask_words + blk0 + u;
            U[cfg.u_tile_mask + word] = atomicLoad(&mbits4[lid]);
        }
    }
}
