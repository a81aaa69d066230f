// Gate evaluation and the fused dense pass (DESIGN.md §2 step 2, §3).
//
// A workgroup handles blocks of BS samples against TG neurons: thread (b, t) = (lid / TG,
// lid % TG). Phase 1 computes the pre-activations x_b · h_t (random gates: a tiled product
// through workgroup memory; weight gates: a sparse dot), phase 2 accumulates
// G[k, t] += Σ_b x_bk · 1[pre_bt > 0] · r_b in registers, KPT features k per thread.
// Neither the n × tile gate matrix nor the n × d features are ever stored.

const BS: u32 = 32u;    // samples per block (one mask word)
const TG: u32 = 8u;     // neurons per workgroup; BS * TG == WG
const KC: u32 = 64u;    // features per phase-1 chunk
const KPT: u32 = 8u;    // features per thread in phase 2
const KR: u32 = 2048u;  // KPT * WG: features per workgroup (grid y)

var<workgroup> xs: array<f32, 2048>;   // BS × KC features of the block
var<workgroup> hs: array<f32, 512>;    // TG × KC gate entries
var<workgroup> ms: array<f32, 256>;    // BS × TG masked residual
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
        for (var u = 0u; u < 8u; u = u + 1u) {
            let e = lid + u * WG;
            let bb = e / KC;
            let k = k0 + e % KC;
            var v = 0.0;
            if (k < d && bb < nvalid) {
                v = feat(smp[bb], k);
            }
            xs[e] = v;
        }
        for (var u = 0u; u < 2u; u = u + 1u) {
            let e = lid + u * WG;
            let tt = e / KC;
            let k = k0 + e % KC;
            var v = 0.0;
            if (k < d) {
                if (from_table) {
                    v = F[tbase + tt * d + k];
                } else {
                    v = gate_normal(hkey[tt], k);
                }
            }
            hs[e] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KC; kk = kk + 1u) {
            acc = acc + xs[b * KC + kk] * hs[t * KC + kk];
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
// Grid (op.ng partial groups over samples, features / KR, neuron groups of TG). Writes the
// group's partial G to F[f_gp + (g·tn_cap + t)·d + k]; topk.wgsl's reduce_tile sums them.
@compute @workgroup_size(256)
fn dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let ky = wid.y;
    let t0 = wid.z * TG;
    let d = cfg.d;
    let nact = op.n_act;
    if (lid == 0u) {
        // Weight gates: a group whose neurons all have zero gate blocks contributes nothing.
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
    var acc: array<f32, 64>;
    for (var e = 0u; e < 64u; e = e + 1u) {
        acc[e] = 0.0;
    }
    for (var base = g * BS; base < nact; base = base + op.ng * BS) {
        let nvalid = min(BS, nact - base);
        if (lid < BS) {
            smp[lid] = sample_of(min(base + lid, nact - 1u));
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
        for (var bb = 0u; bb < nvalid; bb = bb + 1u) {
            let i = smp[bb];
            var m8: array<f32, 8>;
            var nz = false;
            for (var tt = 0u; tt < TG; tt = tt + 1u) {
                m8[tt] = ms[bb * TG + tt];
                nz = nz || m8[tt] != 0.0;
            }
            if (!nz) {
                continue;
            }
            if (cfg.feat == 0u) {
                for (var u = 0u; u < KPT; u = u + 1u) {
                    let k = ky * KR + u * WG + lid;
                    if (k < d) {
                        let xv = xdense(i, k);
                        for (var tt = 0u; tt < TG; tt = tt + 1u) {
                            acc[u * TG + tt] = acc[u * TG + tt] + xv * m8[tt];
                        }
                    }
                }
            } else {
                let gr = grid_ref(i);
                for (var u = 0u; u < KPT; u = u + 1u) {
                    let k = ky * KR + u * WG + lid;
                    if (k < d) {
                        let xv = grid_feat(gr, k);
                        for (var tt = 0u; tt < TG; tt = tt + 1u) {
                            acc[u * TG + tt] = acc[u * TG + tt] + xv * m8[tt];
                        }
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var u = 0u; u < KPT; u = u + 1u) {
        let k = ky * KR + u * WG + lid;
        if (k < d) {
            for (var tt = 0u; tt < TG; tt = tt + 1u) {
                if (t0 + tt < op.tn) {
                    F[cfg.f_gp + (g * cfg.tn_cap + t0 + tt) * d + k] = acc[u * TG + tt];
                }
            }
        }
    }
}
