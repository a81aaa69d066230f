// Gate evaluation and the fused dense pass (DESIGN.md §2 step 2, §3).
//
// A workgroup handles blocks of BS samples against TG neurons: thread (b, t) = (lid / TG,
// lid % TG). Phase 1 computes the pre-activations x_b · h_t (random gates: a tiled product
// through workgroup memory; weight gates: a sparse dot), phase 2 accumulates
// G[k, t] += Σ_b x_bk · 1[pre_bt > 0] · r_b for features k = lid, lid + WG, ... into the
// workgroup's own partial-G rows (read-modify-write, no other workgroup touches them): eight
// accumulators per thread at a time, any d in one workgroup, phase 1 done once per block.
// Neither the n × tile gate matrix nor the n × d features are ever stored.

const BS: u32 = 32u;    // samples per block (one mask word)
const TG: u32 = 8u;     // neurons per workgroup; BS * TG == WG
const KC: u32 = 64u;    // features per phase-1 chunk

var<workgroup> xs: array<vec4<f32>, 512>;   // BS × KC features of the block, by 4
var<workgroup> hs: array<vec4<f32>, 128>;   // TG × KC gate entries, by 4
var<workgroup> smp: array<u32, 32>;    // sample ids of the block
var<workgroup> hkey: array<u32, 8>;    // gate keys of the workgroup's neurons (mask kernel)
var<workgroup> mbits: array<atomic<u32>, 8>;
var<workgroup> flag_w: u32;

// Pre-activation x_{smp[b]} · g_t of this thread's pair, random gates. The gate entries come
// from the tile table at F[tbase + t·d + k] (dense pass) or from the hash (mask kernel).
fn pre_random(lid: u32, nvalid: u32, from_table: bool, tbase: u32) -> f32 {
    let b = lid / TG;
    let t = lid % TG;
    let d = cfg.d;
    var acc = 0.0;
    for (var k0 = 0u; k0 < d; k0 = k0 + KC) {
        // Each thread fills two vec4 of features and half a vec4 of gate entries.
        for (var u = 0u; u < 2u; u = u + 1u) {
            let e = lid + u * WG;
            let bb = e / (KC / 4u);
            let k = k0 + (e % (KC / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (bb < nvalid) {
                v = feat4(smp[bb], k);
            }
            xs[e] = v;
        }
        if (lid < TG * KC / 4u) {
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
    if (cfg.gate == 2u) {
        return vec2<u32>(lid % BS, lid / BS);
    }
    return vec2<u32>(lid / TG, lid % TG);
}

// Random gate vectors of the tile's neurons: F[f_ht + t·d + k] = g_{tile0+t}[k].
@compute @workgroup_size(256)
fn gen_h(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let e = wg_linear(wid, nwg) * WG + lid;
    let d = cfg.d;
    if (e >= op.tn * d) {
        return;
    }
    let t = e / d;
    F[cfg.f_ht + e] = gate_normal(gate_key(op.tile0 + t), e % d);
}

// Gate bits of the current support's runs: mask[r][a / 32] bit a % 32 = gate of run r at
// active position a. Grid: (run group, sample block, sample block high part): run groups vary
// fastest, so the workgroups reading one sample block's features run together (L2 hits).
@compute @workgroup_size(256)
fn mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = wid.y + wid.z * nwg.y;
    let rg = wid.x;
    if (lid == 0u) {
        flag_w = U[cfg.u_meta + META_RUNS];
    }
    let nruns = workgroupUniformLoad(&flag_w);
    let base = blk * BS;
    if (rg * TG >= nruns || base >= op.n_act) {
        return;
    }
    let nvalid = min(BS, op.n_act - base);
    if (lid < BS) {
        smp[lid] = sample_of(min(base + lid, op.n_act - 1u));
    }
    if (lid < TG) {
        let r = min(rg * TG + lid, nruns - 1u);
        hkey[lid] = gate_key(U[cfg.u_runn + r]);
        atomicStore(&mbits[lid], 0u);
    }
    workgroupBarrier();
    let bt = pair_of(lid);
    let b = bt.x;
    let t = bt.y;
    let r = rg * TG + t;
    var open = false;
    if (cfg.gate == 1u) {
        open = pre_random(lid, nvalid, false, 0u) > 0.0;
    } else if (cfg.gate == 2u) {
        if (r < nruns && b < nvalid) {
            open = pre_weights(smp[b], U[cfg.u_runn + r]) > 0.0;
        }
    } else {
        open = true;
    }
    if (open && b < nvalid && r < nruns) {
        atomicOr(&mbits[t], 1u << b);
    }
    workgroupBarrier();
    if (lid < TG && rg * TG + lid < nruns) {
        U[cfg.u_mask + (rg * TG + lid) * cfg.mw + blk] = atomicLoad(&mbits[lid]);
    }
}

// Gate bits of one dense-pass tile for a chunk of active samples: bit b of
// U[u_tmask + t·mwt + blk] = gate of neuron tile0 + t at active position op.dst + 32·blk + b.
// The matrix product (dense.wgsl) then needs no gate arithmetic. A workgroup takes SB
// sample blocks × NW neurons (weight gates; TG for random gates). With weight gates each
// thread evaluates NW / 8 neurons in turn, each at SB samples at once (the gate entries
// loaded once, SB independent feature reads in flight); the many neurons per workgroup let
// the samples' feature segments be read from L2 once per NW neurons rather than per TG.
// Grid: (neuron groups, groups of SB sample blocks, high part of the second).
const SB: u32 = 4u;
const NW: u32 = 64u;
var<workgroup> smp4: array<u32, 128>;  // SB × BS sample ids
// mbits4 (SB × NW mask words) and set_bit come from bits_atomic.wgsl / bits_subgroup.wgsl.

@compute @workgroup_size(256)
fn tile_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    // Neuron groups vary fastest, so the workgroups that read one sample group's feature
    // segments run together and find them in L2.
    let blk0 = (wid.y + wid.z * nwg.y) * SB;
    let nw = select(TG, NW, cfg.gate == 2u);
    let t0 = wid.x * nw;
    if (blk0 * BS >= op.count || t0 >= op.tn) {
        return;
    }
    let nblk = min(SB, (op.count - blk0 * BS + BS - 1u) / BS);
    if (lid < SB * BS) {
        smp4[lid] = sample_of(op.dst + min(blk0 * BS + lid, op.count - 1u));
    }
    if (lid < SB * nw) {
        atomicStore(&mbits4[lid], 0u);
    }
    workgroupBarrier();
    if (cfg.gate == 2u) {
        // A warp: 32 consecutive samples (one segment of each feature column), one neuron
        // at a time.
        let b = lid % BS;
        let i = vec4<u32>(smp4[b], smp4[BS + b], smp4[2u * BS + b], smp4[3u * BS + b]);
        for (var tt = 0u; tt < NW / 8u; tt = tt + 1u) {
            let t = (lid / BS) * (NW / 8u) + tt;
            var pre = vec4<f32>(0.0);
            let tvalid = t0 + t < op.tn;
            if (tvalid) {
                pre = pre_weights4(i, op.tile0 + t0 + t);
            }
            // Outside the branch: set_bit may be a subgroup operation.
            for (var u = 0u; u < SB; u = u + 1u) {
                let open = tvalid && u < nblk && pre[u] > 0.0 && (blk0 + u) * BS + b < op.count;
                set_bit(u * NW + t, open, b);
            }
        }
    } else {
        // Random gates: the shared-memory product of pre_random, one block at a time.
        let b = lid / TG;
        let t = lid % TG;
        for (var u = 0u; u < nblk; u = u + 1u) {
            if (lid < BS) {
                smp[lid] = smp4[u * BS + lid];
            }
            workgroupBarrier();
            let nvalid = min(BS, op.count - (blk0 + u) * BS);
            let open = pre_random(lid, nvalid, true, cfg.f_ht + t0 * cfg.d) > 0.0;
            if (open && t0 + t < op.tn && b < nvalid) {
                atomicOr(&mbits4[u * TG + t], 1u << b);
            }
            workgroupBarrier();
        }
    }
    workgroupBarrier();
    if (lid < SB * nw) {
        let u = lid / nw;
        let tt = lid % nw;
        if (u < nblk && t0 + tt < op.tn) {
            U[cfg.u_tmask + (t0 + tt) * cfg.mwt + blk0 + u] = atomicLoad(&mbits4[lid]);
        }
    }
}
