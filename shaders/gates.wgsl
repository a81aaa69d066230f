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
var<workgroup> ms: array<f32, 256>;    // BS × TG masked residual
var<workgroup> msv: array<vec4<f32>, 64>;  // the same, by 4 neurons
var<workgroup> gref: array<GridRef, 32>;   // grid references of the block's samples
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
// active position a. Grid: (sample block, run group, sample block high part).
@compute @workgroup_size(256)
fn mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = wid.x + wid.z * nwg.x;
    let rg = wid.y;
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
    let b = lid / TG;
    let t = lid % TG;
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

// The fused dense pass for one tile of op.tn neurons starting at op.tile0, residual at op.src.
// Grid (op.ng partial groups over samples, 1, neuron groups of TG). Group g handles sample
// blocks g, g + ng, ... and owns the partial G rows F[f_gp + (g·tn_cap + t)·d + k];
// topk.wgsl's reduce_tile sums the groups in a fixed order. The host makes every group
// non-empty (ng ≤ blocks), so every partial is written.
@compute @workgroup_size(256)
fn dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let t0 = wid.z * TG;
    let d = cfg.d;
    let nact = op.n_act;
    if (lid == 0u) {
        // Weight gates: a group whose neurons all have zero gate blocks contributes nothing
        // (reduce_tile does not read its partials).
        var any = 0u;
        for (var t = 0u; t < TG; t = t + 1u) {
            if (t0 + t < op.tn && (cfg.gate != 2u || U[cfg.u_cand + op.tile0 + t0 + t] != 0u)) {
                any = 1u;
            }
        }
        flag_w = any;
    }
    if (workgroupUniformLoad(&flag_w) == 0u) {
        return;
    }
    let b = lid / TG;
    let t = lid % TG;
    let tvalid = t0 + t < op.tn;
    let out = cfg.f_gp + (g * cfg.tn_cap + t0) * d;
    let nk = (d + WG - 1u) / WG;
    for (var base = g * BS; base < nact; base = base + op.ng * BS) {
        let nvalid = min(BS, nact - base);
        if (lid < BS) {
            let i = sample_of(min(base + lid, nact - 1u));
            smp[lid] = i;
            if (cfg.feat != 0u) {
                gref[lid] = grid_ref(i);
            }
        }
        workgroupBarrier();
        var open = false;
        if (cfg.gate == 1u) {
            open = pre_random(lid, nvalid, true, cfg.f_ht + t0 * d) > 0.0;
        } else if (cfg.gate == 2u) {
            if (tvalid && b < nvalid) {
                open = pre_weights(smp[b], op.tile0 + t0 + t) > 0.0;
            }
        } else {
            open = true;
        }
        var mv = 0.0;
        if (open && tvalid && b < nvalid) {
            mv = F[op.src + base + b];
        }
        ms[lid] = mv;
        workgroupBarrier();
        if (lid < 64u) {
            msv[lid] = vec4<f32>(ms[4u * lid], ms[4u * lid + 1u], ms[4u * lid + 2u], ms[4u * lid + 3u]);
        }
        workgroupBarrier();
        let first = base == g * BS;
        for (var kc = 0u; kc < nk; kc = kc + 1u) {
            let k = kc * WG + lid;
            if (k < d) {
                var lo = vec4<f32>(0.0);
                var hi = vec4<f32>(0.0);
                if (!first) {
                    lo = vec4<f32>(F[out + k], F[out + d + k], F[out + 2u * d + k], F[out + 3u * d + k]);
                    hi = vec4<f32>(F[out + 4u * d + k], F[out + 5u * d + k], F[out + 6u * d + k], F[out + 7u * d + k]);
                }
                for (var bb = 0u; bb < nvalid; bb = bb + 1u) {
                    let ml = msv[2u * bb];
                    let mh = msv[2u * bb + 1u];
                    if (all(ml == vec4<f32>(0.0)) && all(mh == vec4<f32>(0.0))) {
                        continue;
                    }
                    var x = 0.0;
                    if (cfg.feat == 0u) {
                        x = xdense(smp[bb], k);
                    } else {
                        x = grid_feat(gref[bb], k);
                    }
                    lo = lo + x * ml;
                    hi = hi + x * mh;
                }
                // Rows beyond the tile (nt < TG) are scratch that nobody reads.
                F[out + k] = lo.x;
                F[out + d + k] = lo.y;
                F[out + 2u * d + k] = lo.z;
                F[out + 3u * d + k] = lo.w;
                F[out + 4u * d + k] = hi.x;
                F[out + 5u * d + k] = hi.y;
                F[out + 6u * d + k] = hi.z;
                F[out + 7u * d + k] = hi.w;
            }
        }
        workgroupBarrier();
    }
}
