// Streaming top-s (ARCHITECTURE.md, "The IHT step", step 2): candidates c = w − μ G of one tile are merged
// with the running buffer (slot op.slot_a, sorted by index, all indices below the tile's) by a
// radix select on 32-bit keys (|c| bits + 1; 0 = excluded) in digits of 11, 11 and 10 bits,
// then an ordered compaction into slot op.slot_out. Elements are numbered buffer first, then the
// tile, which is index order: the output stays sorted and ties go to the lower index.

var<workgroup> bins: array<u32, HIST_BINS>;
var<workgroup> lh: array<atomic<u32>, HIST_BINS>;
const_assert HIST_BINS == 2048u;  // 11-bit digits

// c = −μ · Σ_g partial_g for the tile (keys 0 for neurons whose gates are closed everywhere);
// μ = op.mu, or (FLAG_MU_SC) the normalised step `step_mu` left on the device.
@compute @workgroup_size(WG_SIZE)
fn reduce_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = wg_linear(wid, nwg) * WG_SIZE + lid;
    let d = cfg.d;
    if (e >= op.tile_neurons * d) {
        return;
    }
    let t = e / d;
    let k = e % d;
    let cand = cfg.gate_mode != GATE_WEIGHTS || U[cfg.u_gate_nonzero + op.tile0 + t] != 0u;
    var sum = 0.0;
    if (cand) {
        for (var g = 0u; g < op.sample_groups; g = g + 1u) {
            sum = sum + F[cfg.f_partial_g + (g * cfg.tile_cap + t) * d + k];
        }
    }
    var mu = op.mu;
    if ((op.flags & FLAG_MU_SC) != 0u) {
        mu = F[cfg.f_scalars + SC_MU];
    }
    let c = -mu * sum;
    F[cfg.f_tile_cand + e] = c;
    var key = 0u;
    if (cand) {
        key = mag_key(c);
    }
    U[cfg.u_tile_keys + e] = key;
}

// c += w for the entries of slot op.slot_b inside the tile (a closed neuron keeps c = w there).
@compute @workgroup_size(WG_SIZE)
fn add_w(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    if (p >= slot_len(op.slot_b)) {
        return;
    }
    let idx = sidx(op.slot_b, p);
    let j = idx / cfg.d;
    if (j < op.tile0 || j >= op.tile0 + op.tile_neurons) {
        return;
    }
    let e = idx - op.tile0 * cfg.d;
    let c = F[cfg.f_tile_cand + e] + sval(op.slot_b, p);
    F[cfg.f_tile_cand + e] = c;
    U[cfg.u_tile_keys + e] = mag_key(c);
}

fn cand_key(e: u32, nbuf: u32) -> u32 {
    if (e < nbuf) {
        return mag_key(sval(op.slot_a, e));
    }
    return U[cfg.u_tile_keys + e - nbuf];
}

// Histogram of digit op.radix_pass among the candidates matching the prefix found so far.
@compute @workgroup_size(WG_SIZE)
fn hist(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var b = lid; b < HIST_BINS; b = b + WG_SIZE) {
        atomicStore(&lh[b], 0u);
    }
    workgroupBarrier();
    let nbuf = slot_len(op.slot_a);
    let total = nbuf + op.tile_elems;
    let ps = op.radix_pass;
    let prefix = U[cfg.u_meta + META_PREFIX];
    let nthreads = nwg.x * WG_SIZE;
    for (var e = wid.x * WG_SIZE + lid; e < total; e = e + nthreads) {
        let key = cand_key(e, nbuf);
        if (ps == 0u) {
            atomicAdd(&lh[key >> 21u], 1u);
        } else if (ps == 1u) {
            if ((key >> 21u) == prefix) {
                atomicAdd(&lh[(key >> 10u) & 0x7ffu], 1u);
            }
        } else if ((key >> 10u) == prefix) {
            atomicAdd(&lh[key & 0x3ffu], 1u);
        }
    }
    workgroupBarrier();
    for (var b = lid; b < HIST_BINS; b = b + WG_SIZE) {
        let v = atomicLoad(&lh[b]);
        if (v != 0u) {
            atomicAdd(&H[b], v);
        }
    }
}

// One workgroup: picks the digit holding the s-th largest key, clears the histogram. Thread t
// owns the t-th group of bins counted from the top; a scan over the groups finds the one
// where the running count from the top reaches the rank still needed.
@compute @workgroup_size(WG_SIZE)
fn select_digit(@builtin(local_invocation_index) lid: u32) {
    for (var b = lid; b < HIST_BINS; b = b + WG_SIZE) {
        bins[b] = atomicLoad(&H[b]);
        atomicStore(&H[b], 0u);
    }
    workgroupBarrier();
    let ps = op.radix_pass;
    var k = op.top_s;
    var prefix = 0u;
    var done = 0u;
    if (ps != 0u) {
        k = U[cfg.u_meta + META_K];
        prefix = U[cfg.u_meta + META_PREFIX];
        done = U[cfg.u_meta + META_DONE];
    }
    var nb = HIST_BINS;
    var bits = 11u;
    if (ps == 2u) {
        nb = HIST_BINS / 2u;
        bits = 10u;
    }
    let per = nb / WG_SIZE;
    let top = nb - per * lid; // this thread's bins: [top − per, top)
    var own = 0u;
    for (var b = top - per; b < top; b = b + 1u) {
        own = own + bins[b];
    }
    let sc = wg_scan(own, lid);
    let above = sc.x - own;
    if (done != 0u) {
        return;
    }
    if (sc.y < k) {
        // Fewer than s candidates (first pass only): take them all (keys 0 stay excluded).
        if (lid == 0u) {
            U[cfg.u_meta + META_DONE] = 1u;
            U[cfg.u_meta + META_KSTAR] = 0u;
            U[cfg.u_meta + META_NEED] = 0u;
        }
        return;
    }
    if (above >= k || sc.x < k) {
        return;
    }
    // This thread's group holds the k-th largest key.
    var cum = above;
    var dsel = top - 1u;
    for (var b = top; b > top - per; b = b - 1u) {
        let h = bins[b - 1u];
        if (cum + h >= k) {
            dsel = b - 1u;
            break;
        }
        cum = cum + h;
    }
    k = k - cum;
    prefix = (prefix << bits) | dsel;
    if (ps == 2u) {
        done = 1u;
        U[cfg.u_meta + META_KSTAR] = prefix;
        var need = k;
        if (prefix == 0u) {
            need = 0u;
        }
        U[cfg.u_meta + META_NEED] = need;
    }
    U[cfg.u_meta + META_K] = k;
    U[cfg.u_meta + META_PREFIX] = prefix;
    U[cfg.u_meta + META_DONE] = done;
}

const EPT: u32 = SCAN_BLOCK / WG_SIZE;  // elements per thread in count / scatter

// Per block of SCAN_BLOCK elements: how many keys are above the threshold and how many equal it.
@compute @workgroup_size(WG_SIZE)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let blk = wg_linear(wid, nwg);
    let nbuf = slot_len(op.slot_a);
    let total = nbuf + op.tile_elems;
    let kstar = U[cfg.u_meta + META_KSTAR];
    var gt = 0u;
    var eq = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * SCAN_BLOCK + lid * EPT + u;
        if (e < total) {
            let key = cand_key(e, nbuf);
            if (key > kstar) {
                gt = gt + 1u;
            } else if (key == kstar) {
                eq = eq + 1u;
            }
        }
    }
    let sg = wg_scan(gt, lid);
    let se = wg_scan(eq, lid);
    if (lid == 0u && blk < op.scan_blocks) {
        U[cfg.u_scan_blocks + 2u * blk] = sg.y;
        U[cfg.u_scan_blocks + 2u * blk + 1u] = se.y;
    }
}

// One workgroup: exclusive prefix of the block counts (op.scan_blocks blocks), output length.
@compute @workgroup_size(WG_SIZE)
fn scan(@builtin(local_invocation_index) lid: u32) {
    let nblk = op.scan_blocks;
    let per = (nblk + WG_SIZE - 1u) / WG_SIZE;
    let lo = min(lid * per, nblk);
    let hi = min(lo + per, nblk);
    var gt = 0u;
    var eq = 0u;
    for (var b = lo; b < hi; b = b + 1u) {
        gt = gt + U[cfg.u_scan_blocks + 2u * b];
        eq = eq + U[cfg.u_scan_blocks + 2u * b + 1u];
    }
    let sg = wg_scan(gt, lid);
    let se = wg_scan(eq, lid);
    var pg = sg.x - gt;
    var pe = se.x - eq;
    for (var b = lo; b < hi; b = b + 1u) {
        let cg = U[cfg.u_scan_blocks + 2u * b];
        let ce = U[cfg.u_scan_blocks + 2u * b + 1u];
        U[cfg.u_scan_blocks + 2u * b] = pg;
        U[cfg.u_scan_blocks + 2u * b + 1u] = pe;
        pg = pg + cg;
        pe = pe + ce;
    }
    if (lid == 0u) {
        let need = U[cfg.u_meta + META_NEED];
        U[cfg.u_slot_len + op.slot_out] = sg.y + min(se.y, need);
    }
}

// Writes the selected elements of each block, in order, into slot op.slot_out.
@compute @workgroup_size(WG_SIZE)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let blk = wg_linear(wid, nwg);
    let nbuf = slot_len(op.slot_a);
    let total = nbuf + op.tile_elems;
    let kstar = U[cfg.u_meta + META_KSTAR];
    let need = U[cfg.u_meta + META_NEED];
    var base_gt = 0u;
    var base_eq = 0u;
    if (blk < op.scan_blocks) {
        base_gt = U[cfg.u_scan_blocks + 2u * blk];
        base_eq = U[cfg.u_scan_blocks + 2u * blk + 1u];
    }
    var keys: array<u32, EPT>;
    var eq = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * SCAN_BLOCK + lid * EPT + u;
        var key = 0u;
        if (e < total) {
            key = cand_key(e, nbuf);
            if (key == kstar) {
                eq = eq + 1u;
            }
        }
        keys[u] = key;
    }
    let se = wg_scan(eq, lid);
    var eq_rank = base_eq + se.x - eq;
    var sel: array<bool, EPT>;
    var nsel = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * SCAN_BLOCK + lid * EPT + u;
        var s = false;
        if (e < total) {
            if (keys[u] > kstar) {
                s = true;
            } else if (keys[u] == kstar) {
                s = eq_rank < need;
                eq_rank = eq_rank + 1u;
            }
        }
        sel[u] = s;
        if (s) {
            nsel = nsel + 1u;
        }
    }
    let ss = wg_scan(nsel, lid);
    var pos = base_gt + min(base_eq, need) + ss.x - nsel;
    let out = op.slot_out * cfg.slot_cap;
    for (var u = 0u; u < EPT; u = u + 1u) {
        if (sel[u]) {
            let e = blk * SCAN_BLOCK + lid * EPT + u;
            if (e < nbuf) {
                U[cfg.u_slot_indices + out + pos] = sidx(op.slot_a, e);
                F[cfg.f_slot_values + out + pos] = sval(op.slot_a, e);
            } else {
                let q = e - nbuf;
                U[cfg.u_slot_indices + out + pos] = op.tile0 * cfg.d + q;
                F[cfg.f_slot_values + out + pos] = F[cfg.f_tile_cand + q];
            }
            pos = pos + 1u;
        }
    }
}
