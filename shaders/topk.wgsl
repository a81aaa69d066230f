// Streaming top-s (DESIGN.md §2 step 2, §7): candidates c = w − μ G of one tile are merged
// with the running buffer (slot op.a, sorted by index, all indices below the tile's) by a
// radix select on 32-bit keys (|c| bits + 1; 0 = excluded) in digits of 11, 11 and 10 bits,
// then an ordered compaction into slot op.c. Elements are numbered buffer first, then the
// tile, which is index order: the output stays sorted and ties go to the lower index.

var<workgroup> bins: array<u32, 2048>;
var<workgroup> lh: array<atomic<u32>, 2048>;

// c = −μ · Σ_g partial_g for the tile (keys 0 for neurons whose gates are closed everywhere).
@compute @workgroup_size(256)
fn reduce_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = wg_linear(wid, nwg) * WG + lid;
    let d = cfg.d;
    if (e >= op.tn * d) {
        return;
    }
    let t = e / d;
    let k = e % d;
    let cand = cfg.gate != 2u || U[cfg.u_cand + op.tile0 + t] != 0u;
    var sum = 0.0;
    if (cand) {
        for (var g = 0u; g < op.ng; g = g + 1u) {
            sum = sum + F[cfg.f_gp + (g * cfg.tn_cap + t) * d + k];
        }
    }
    let c = -op.mu * sum;
    F[cfg.f_ct + e] = c;
    var key = 0u;
    if (cand) {
        key = mag_key(c);
    }
    U[cfg.u_keys + e] = key;
}

// c += w for the entries of slot op.b inside the tile (a closed neuron keeps c = w there).
@compute @workgroup_size(256)
fn add_w(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let p = wg_linear(wid, nwg) * WG + lid;
    if (p >= slot_len(op.b)) {
        return;
    }
    let idx = sidx(op.b, p);
    let j = idx / cfg.d;
    if (j < op.tile0 || j >= op.tile0 + op.tn) {
        return;
    }
    let e = idx - op.tile0 * cfg.d;
    let c = F[cfg.f_ct + e] + sval(op.b, p);
    F[cfg.f_ct + e] = c;
    U[cfg.u_keys + e] = mag_key(c);
}

fn cand_key(e: u32, nbuf: u32) -> u32 {
    if (e < nbuf) {
        return mag_key(sval(op.a, e));
    }
    return U[cfg.u_keys + e - nbuf];
}

// Histogram of digit op.pass_ among the candidates matching the prefix found so far.
@compute @workgroup_size(256)
fn hist(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var b = lid; b < 2048u; b = b + WG) {
        atomicStore(&lh[b], 0u);
    }
    workgroupBarrier();
    let nbuf = slot_len(op.a);
    let total = nbuf + op.count;
    let ps = op.pass_;
    let prefix = U[cfg.u_meta + META_PREFIX];
    let nthreads = nwg.x * WG;
    for (var e = wid.x * WG + lid; e < total; e = e + nthreads) {
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
    for (var b = lid; b < 2048u; b = b + WG) {
        let v = atomicLoad(&lh[b]);
        if (v != 0u) {
            atomicAdd(&H[b], v);
        }
    }
}

// One workgroup: picks the digit holding the s-th largest key, clears the histogram. Thread t
// owns the t-th group of bins counted from the top; a scan over the groups finds the one
// where the running count from the top reaches the rank still needed.
@compute @workgroup_size(256)
fn select_digit(@builtin(local_invocation_index) lid: u32) {
    for (var b = lid; b < 2048u; b = b + WG) {
        bins[b] = atomicLoad(&H[b]);
        atomicStore(&H[b], 0u);
    }
    workgroupBarrier();
    let ps = op.pass_;
    var k = op.s;
    var prefix = 0u;
    var done = 0u;
    if (ps != 0u) {
        k = U[cfg.u_meta + META_K];
        prefix = U[cfg.u_meta + META_PREFIX];
        done = U[cfg.u_meta + META_DONE];
    }
    var nb = 2048u;
    var bits = 11u;
    if (ps == 2u) {
        nb = 1024u;
        bits = 10u;
    }
    let per = nb / WG;
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

const EPT: u32 = 4u;       // elements per thread in count / scatter
const BLK: u32 = 1024u;    // EPT * WG

// Per block of BLK elements: how many keys are above the threshold and how many equal it.
@compute @workgroup_size(256)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let blk = wg_linear(wid, nwg);
    let nbuf = slot_len(op.a);
    let total = nbuf + op.count;
    let kstar = U[cfg.u_meta + META_KSTAR];
    var gt = 0u;
    var eq = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * BLK + lid * EPT + u;
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
    if (lid == 0u && blk < op.sc) {
        U[cfg.u_blk + 2u * blk] = sg.y;
        U[cfg.u_blk + 2u * blk + 1u] = se.y;
    }
}

// One workgroup: exclusive prefix of the block counts (op.sc blocks), output length.
@compute @workgroup_size(256)
fn scan(@builtin(local_invocation_index) lid: u32) {
    let nblk = op.sc;
    let per = (nblk + WG - 1u) / WG;
    let lo = min(lid * per, nblk);
    let hi = min(lo + per, nblk);
    var gt = 0u;
    var eq = 0u;
    for (var b = lo; b < hi; b = b + 1u) {
        gt = gt + U[cfg.u_blk + 2u * b];
        eq = eq + U[cfg.u_blk + 2u * b + 1u];
    }
    let sg = wg_scan(gt, lid);
    let se = wg_scan(eq, lid);
    var pg = sg.x - gt;
    var pe = se.x - eq;
    for (var b = lo; b < hi; b = b + 1u) {
        let cg = U[cfg.u_blk + 2u * b];
        let ce = U[cfg.u_blk + 2u * b + 1u];
        U[cfg.u_blk + 2u * b] = pg;
        U[cfg.u_blk + 2u * b + 1u] = pe;
        pg = pg + cg;
        pe = pe + ce;
    }
    if (lid == 0u) {
        let need = U[cfg.u_meta + META_NEED];
        U[cfg.u_len + op.c] = sg.y + min(se.y, need);
    }
}

// Writes the selected elements of each block, in order, into slot op.c.
@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let blk = wg_linear(wid, nwg);
    let nbuf = slot_len(op.a);
    let total = nbuf + op.count;
    let kstar = U[cfg.u_meta + META_KSTAR];
    let need = U[cfg.u_meta + META_NEED];
    var base_gt = 0u;
    var base_eq = 0u;
    if (blk < op.sc) {
        base_gt = U[cfg.u_blk + 2u * blk];
        base_eq = U[cfg.u_blk + 2u * blk + 1u];
    }
    var keys: array<u32, 4>;
    var eq = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * BLK + lid * EPT + u;
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
    var sel: array<bool, 4>;
    var nsel = 0u;
    for (var u = 0u; u < EPT; u = u + 1u) {
        let e = blk * BLK + lid * EPT + u;
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
    let out = op.c * cfg.cap;
    for (var u = 0u; u < EPT; u = u + 1u) {
        if (sel[u]) {
            let e = blk * BLK + lid * EPT + u;
            if (e < nbuf) {
                U[cfg.u_idx + out + pos] = sidx(op.a, e);
                F[cfg.f_vals + out + pos] = sval(op.a, e);
            } else {
                let q = e - nbuf;
                U[cfg.u_idx + out + pos] = op.tile0 * cfg.d + q;
                F[cfg.f_vals + out + pos] = F[cfg.f_ct + q];
            }
            pos = pos + 1u;
        }
    }
}
