// Support-restricted passes (ARCHITECTURE.md, "The IHT step", steps 1 and 3): runs of a support, A_S v, A_Sᵀ r,
// the trial point, slot copies, scalar reductions, the weight-gate index, and the μ and
// decision steps of a refinement batch run in one submission. Kernels of such a chain carry
// FLAG_GUARD and do nothing once a step has been rejected.

var<workgroup> len_w: u32;

// Groups the entries of slot op.slot_a into per-neuron runs (indices are sorted, so runs are
// contiguous): u_run_neuron[r] = neuron, u_run_start[r]..u_run_start[r+1] = entries,
// u_entry_run[p] = run of p, u_neuron_run[j] = 1 + run of neuron j (0: none). One workgroup:
// an ordered compaction in chunks of WG_SIZE entries.
@compute @workgroup_size(WG_SIZE)
fn runs(@builtin(local_invocation_index) lid: u32) {
    let q = op.slot_a;
    let d = cfg.d;
    if (lid == 0u) {
        len_w = slot_len(q);
    }
    let len = workgroupUniformLoad(&len_w);
    for (var j = lid; j < cfg.m; j = j + WG_SIZE) {
        U[cfg.u_neuron_run + j] = 0u;
    }
    storageBarrier();
    var carry = 0u;
    for (var c = 0u; c < len; c = c + WG_SIZE) {
        let p = c + lid;
        var start = 0u;
        var nj = 0u;
        if (p < len) {
            nj = sidx(q, p) / d;
            if (p == 0u || sidx(q, p - 1u) / d != nj) {
                start = 1u;
            }
        }
        let sc = wg_scan(start, lid);
        if (p < len) {
            let run = carry + sc.x - 1u;
            if (start == 1u) {
                U[cfg.u_run_neuron + run] = nj;
                U[cfg.u_run_start + run] = p;
                U[cfg.u_neuron_run + nj] = run + 1u;
            }
            U[cfg.u_entry_run + p] = run;
        }
        carry = carry + sc.y;
    }
    if (lid == 0u) {
        U[cfg.u_run_start + carry] = len;
        U[cfg.u_meta + META_RUNS] = carry;
    }
}

// Chunk `chunk`'s partial prediction (hi, lo) at active position a, as apply_fin reads them.
fn store_partial(chunk: u32, a: u32, pred: f32, comp: f32) {
    F[cfg.f_partial_pred + chunk * op.n_act + a] = pred;
    F[cfg.f_partial_pred + (op.run_chunks + chunk) * op.n_act + a] = comp;
}

// The active sample of thread `lid` on the partial-prediction grid shared by `apply` and
// `apply_f`: (sample workgroups, chunks, sample workgroups high part).
fn partial_sample(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.z * nwg.x) * WG_SIZE + lid;
}

// Chunk `chunk`'s share [lo, hi) of `total` items (runs or features), split evenly over
// op.run_chunks: the layout `store_partial` and `apply_fin` rely on.
fn chunk_span(total: u32, chunk: u32) -> vec2<u32> {
    return vec2<u32>((total * chunk) / op.run_chunks, (total * (chunk + 1u)) / op.run_chunks);
}

// Partial predictions: thread (a, chunk) sums (A_S v)_i over its chunk of the support's runs
// (gates from the mask) with a compensated sum, into F[f_partial_pred]: hi at c·n_act + a, lo at
// (op.run_chunks + c)·n_act + a. Chunks over runs give small-n problems enough threads.
// Grid: (sample workgroups, op.run_chunks chunks, sample workgroups high part).
@compute @workgroup_size(WG_SIZE)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let a = partial_sample(wid, nwg, lid);
    let chunk = wid.y;
    let nact = op.n_act;
    if (a >= nact) {
        return;
    }
    let q = op.slot_a;
    let d = cfg.d;
    let i = sample_of(a);
    let span = chunk_span(U[cfg.u_meta + META_RUNS], chunk);
    let r0 = span.x;
    let r1 = span.y;
    var pred = 0.0;
    var comp = 0.0;
    if (cfg.grid_features == 0u) {
        for (var r = r0; r < r1; r = r + 1u) {
            if (gate_open(r, a)) {
                // Run r holds neuron j's entries: feature = index − j·d (no division).
                let jd = U[cfg.u_run_neuron + r] * d;
                let e = U[cfg.u_run_start + r + 1u];
                for (var p = U[cfg.u_run_start + r]; p < e; p = p + 1u) {
                    acc2(&pred, &comp, xdense(i, sidx(q, p) - jd), sval(q, p));
                }
            }
        }
    } else {
        let gr = grid_ref(i);
        for (var r = r0; r < r1; r = r + 1u) {
            if (gate_open(r, a)) {
                let jd = U[cfg.u_run_neuron + r] * d;
                let e = U[cfg.u_run_start + r + 1u];
                for (var p = U[cfg.u_run_start + r]; p < e; p = p + 1u) {
                    acc2(&pred, &comp, grid_feat(gr, sidx(q, p) - jd), sval(q, p));
                }
            }
        }
    }
    store_partial(chunk, a, pred, comp);
}

// out_a = Σ_chunks partials [− y_i] (chunks in order, compensated); stores out at
// op.dst_offset if FLAG_STORE and writes the workgroup's Σ out² to f_partial_sums.
@compute @workgroup_size(WG_SIZE)
fn apply_fin(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let g = wg_linear(wid, nwg);
    let a = g * WG_SIZE + lid;
    let nact = op.n_act;
    var sq = 0.0;
    if (a < nact) {
        var hi = 0.0;
        var lo = 0.0;
        for (var c = 0u; c < op.run_chunks; c = c + 1u) {
            let p = F[cfg.f_partial_pred + c * nact + a];
            let t = hi + p;
            let bp = (t + cfg.zero) - hi;
            let plo = F[cfg.f_partial_pred + (op.run_chunks + c) * nact + a];
            lo = lo + ((hi - (t - bp)) + (p - bp)) + plo;
            hi = t;
        }
        // hi − y is exact when they are close (Sterbenz); the compensation goes on after.
        var out = hi + lo;
        if ((op.flags & FLAG_SUB_Y) != 0u) {
            out = (hi - F[cfg.f_targets + sample_of(a)]) + lo;
        }
        if ((op.flags & FLAG_STORE) != 0u) {
            F[op.dst_offset + a] = out;
        }
        sq = out * out;
    }
    let total = wg_sum(sq, lid);
    if (lid == 0u) {
        F[cfg.f_partial_sums + g] = total;
    }
}

// g_p = Σ_a open(run_p, a) r_a x_{i_a, k_p} on the support of slot op.slot_a (residual at
// op.src_offset), into slot op.slot_out (same indices). One workgroup per entry.
@compute @workgroup_size(WG_SIZE)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let p = wg_linear(wid, nwg);
    let q = op.slot_a;
    let len = slot_len(q);
    var acc = 0.0;
    if (p < len) {
        let run = U[cfg.u_entry_run + p];
        let k = sidx(q, p) % cfg.d;
        for (var a = lid; a < op.n_act; a = a + WG_SIZE) {
            if (gate_open(run, a)) {
                acc = acc + F[op.src_offset + a] * feat(sample_of(a), k);
            }
        }
    }
    let total = wg_sum(acc, lid);
    if (lid == 0u && p < len) {
        F[cfg.f_slot_values + op.slot_out * cfg.slot_cap + p] = total;
        U[cfg.u_slot_indices + op.slot_out * cfg.slot_cap + p] = sidx(q, p);
    }
    if (lid == 0u && p == 0u) {
        U[cfg.u_slot_len + op.slot_out] = len;
    }
}

// Slot op.slot_out = slot op.slot_a − μ · slot op.slot_b (same support); μ = op.mu, or
// (FLAG_MU_SC) the refinement's device-side step size.
@compute @workgroup_size(WG_SIZE)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    let len = slot_len(op.slot_a);
    var mu = op.mu;
    if ((op.flags & FLAG_MU_SC) != 0u) {
        mu = F[cfg.f_scalars + SC_MU];
    }
    if (p < len) {
        U[cfg.u_slot_indices + op.slot_out * cfg.slot_cap + p] = sidx(op.slot_a, p);
        let v = sval(op.slot_a, p) - mu * sval(op.slot_b, p);
        F[cfg.f_slot_values + op.slot_out * cfg.slot_cap + p] = v;
    }
    if (p == 0u) {
        U[cfg.u_slot_len + op.slot_out] = len;
    }
}

// The normalised step μ = ‖g‖² / (‖A g‖² + 1e-8) of `step_size`'s scalars 0 and 1 into SC_MU,
// for a dense pass that reads it there (the host's μ is the same quotient in f64, rounded).
@compute @workgroup_size(1)
fn step_mu() {
    let sc = cfg.f_scalars;
    F[sc + SC_MU] = F[sc] / (F[sc + 1u] + 1e-8);
}

// Momentum: slot op.slot_out = a + β·(a − b) at every index of a = slot op.slot_a, β = op.mu,
// b = slot op.slot_b's value at that index (a binary search of its sorted indices; 0 where
// it has none).
@compute @workgroup_size(WG_SIZE)
fn extrapolate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    let len = slot_len(op.slot_a);
    if (p < len) {
        let k = sidx(op.slot_a, p);
        let nb = slot_len(op.slot_b);
        var lo = 0u;
        var hi = nb;
        while (lo < hi) {
            let mid = (lo + hi) / 2u;
            if (sidx(op.slot_b, mid) < k) {
                lo = mid + 1u;
            } else {
                hi = mid;
            }
        }
        var b = 0.0;
        if (lo < nb && sidx(op.slot_b, lo) == k) {
            b = sval(op.slot_b, lo);
        }
        let a = sval(op.slot_a, p);
        U[cfg.u_slot_indices + op.slot_out * cfg.slot_cap + p] = k;
        F[cfg.f_slot_values + op.slot_out * cfg.slot_cap + p] = a + op.mu * (a - b);
    }
    if (p == 0u) {
        U[cfg.u_slot_len + op.slot_out] = len;
    }
}

// Slot op.slot_out = slot op.slot_a; with FLAG_IF_ODD only when a refinement batch accepted an
// odd number of steps (its iterate then sits in the other slot of the pair).
@compute @workgroup_size(WG_SIZE)
fn copy_slot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    if ((op.flags & FLAG_IF_ODD) != 0u && (U[cfg.u_meta + META_ACC] & 1u) == 0u) {
        return;
    }
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    let len = slot_len(op.slot_a);
    if (p < len) {
        U[cfg.u_slot_indices + op.slot_out * cfg.slot_cap + p] = sidx(op.slot_a, p);
        F[cfg.f_slot_values + op.slot_out * cfg.slot_cap + p] = sval(op.slot_a, p);
    }
    if (p == 0u) {
        U[cfg.u_slot_len + op.slot_out] = len;
    }
}

// Σ F[base + e] (or Σ F[base + e]², `sq`) for e < count over one workgroup, in a fixed order.
fn wg_total(base: u32, count: u32, sq: bool, lid: u32) -> f32 {
    var acc = 0.0;
    for (var e = lid; e < count; e = e + WG_SIZE) {
        let v = F[base + e];
        if (sq) {
            acc = acc + v * v;
        } else {
            acc = acc + v;
        }
    }
    return wg_sum(acc, lid);
}

// One workgroup: F[f_scalars + op.scalar] = Σ F[op.src_offset + e] for e < op.partials, or
// (FLAG_SLOT_SQ) the squared norm of slot op.slot_a.
@compute @workgroup_size(WG_SIZE)
fn reduce(@builtin(local_invocation_index) lid: u32) {
    var total = 0.0;
    if ((op.flags & FLAG_SLOT_SQ) != 0u) {
        let q = op.slot_a;
        total = wg_total(cfg.f_slot_values + q * cfg.slot_cap, slot_len(q), true, lid);
    } else {
        total = wg_total(op.src_offset, op.partials, false, lid);
    }
    if (lid == 0u) {
        F[cfg.f_scalars + op.scalar] = total;
    }
}

// Refinement batch, one workgroup: ‖g‖² of slot op.slot_a (the gradient) and ‖A g‖² (the
// op.partials partial sums of the apply of g) summed as `reduce` sums them, and
// μ = gn / (curv + 1e-8); with FLAG_MU_KEEP only ‖g‖² (μ stays as it is).
@compute @workgroup_size(WG_SIZE)
fn refine_mu(@builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let q = op.slot_a;
    let gn = wg_total(cfg.f_slot_values + q * cfg.slot_cap, slot_len(q), true, lid);
    if ((op.flags & FLAG_MU_KEEP) != 0u) {
        // Armijo after its first step: μ stays; ‖A g‖² is not needed (recorded as 0).
        if (lid == 0u) {
            F[cfg.f_scalars + SC_GN] = gn;
            F[cfg.f_scalars + SC_CURV] = 0.0;
        }
        return;
    }
    let curv = wg_total(cfg.f_partial_sums, op.partials, false, lid);
    if (lid == 0u) {
        F[cfg.f_scalars + SC_GN] = gn;
        F[cfg.f_scalars + SC_CURV] = curv;
        // The host computes it in f64: μ may differ in the last bit, which only matters
        // bit-for-bit (the host's backtracking halves the μ the device used).
        F[cfg.f_scalars + SC_MU] = gn / (curv + 1e-8);
    }
}

// Refinement batch, one workgroup, after the trial's apply: f(trial) from the op.partials
// partials, the Armijo decision against the loss at the current iterate, the record of step
// op.step. Accepted: the trial's loss becomes the current one and META_ACC counts the step;
// otherwise META_STOP turns the rest of the submission's chain into no-ops.
@compute @workgroup_size(WG_SIZE)
fn refine_decide(@builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let ft = wg_total(cfg.f_partial_sums, op.partials, false, lid);
    if (lid == 0u) {
        let sc = cfg.f_scalars;
        let gn = F[sc + SC_GN];
        let mu = F[sc + SC_MU];
        let ok = armijo(F[sc + SC_FV], ft, mu, gn);
        let r = sc + SC_REC + REC_LEN * op.step;
        F[r] = gn;
        F[r + 1u] = F[sc + SC_CURV];
        F[r + 2u] = mu;
        F[r + 3u] = ft;
        F[r + 4u] = select(0.0, 1.0, ok);
        if (ok) {
            F[sc + SC_FV] = ft;
            U[cfg.u_meta + META_ACC] = op.step + 1u;
        } else {
            U[cfg.u_meta + META_STOP] = 1u;
        }
    }
}

fn lower_bound(q: u32, len: u32, key: u32) -> u32 {
    var lo = 0u;
    var hi = len;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (sidx(q, mid) < key) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Per neuron of the gate snapshot: its entry range and whether any value is nonzero (a
// neuron with an all-zero gate block is closed everywhere and skipped by the dense pass).
@compute @workgroup_size(WG_SIZE)
fn gates_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let j = wg_linear(wid, nwg) * WG_SIZE + lid;
    if (j >= cfg.m) {
        return;
    }
    let q = cfg.gate_slot;
    let len = slot_len(q);
    let lo = lower_bound(q, len, j * cfg.d);
    let hi = lower_bound(q, len, j * cfg.d + cfg.d);
    var nz = 0u;
    for (var p = lo; p < hi; p = p + 1u) {
        if (sval(q, p) != 0.0) {
            nz = 1u;
        }
    }
    U[cfg.u_gate_range + j] = lo;
    U[cfg.u_gate_range + cfg.m + j] = hi;
    U[cfg.u_gate_nonzero + j] = nz;
}

// ---- the support by feature (GpuOptions::support_order = Feature) ----
// Entry lists per feature k: U[u_feat_entry + U[u_feat_start + k] ..
// U[u_feat_start + k + 1]] hold the entries of slot op.slot_a with feature k, in entry order.
// Built after `runs` with H (zero between kernels) as the per-feature counters: count, an
// exclusive scan, placement in any order, then a sort of each list (so the order, and every
// sum over it, is deterministic).

// H[k] += entries with feature k. One thread per entry.
@compute @workgroup_size(WG_SIZE)
fn feat_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    let q = op.slot_a;
    if (p < slot_len(q)) {
        atomicAdd(&H[sidx(q, p) % cfg.d], 1u);
    }
}

// U[u_feat_start + k] = Σ_{k' < k} H[k'] for k ≤ d, and the features with entries in
// u_feat_list (META_FEATS of them); H back to zero. One workgroup.
@compute @workgroup_size(WG_SIZE)
fn feat_scan(@builtin(local_invocation_index) lid: u32) {
    let d = cfg.d;
    var carry = 0u;
    var listed = 0u;
    for (var c = 0u; c < d; c = c + WG_SIZE) {
        let k = c + lid;
        var v = 0u;
        if (k < d) {
            v = atomicLoad(&H[k]);
            atomicStore(&H[k], 0u);
        }
        let sc = wg_scan(v, lid);
        let used = select(0u, 1u, v > 0u);
        let sl = wg_scan(used, lid);
        if (k < d) {
            U[cfg.u_feat_start + k] = carry + sc.x - v;
            if (used == 1u) {
                U[cfg.u_feat_list + listed + sl.x - 1u] = k;
            }
        }
        carry = carry + sc.y;
        listed = listed + sl.y;
    }
    if (lid == 0u) {
        U[cfg.u_feat_start + d] = carry;
        U[cfg.u_meta + META_FEATS] = listed;
    }
}

// Each entry into its feature's list, at a position the counters hand out. One thread per
// entry.
@compute @workgroup_size(WG_SIZE)
fn feat_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let p = wg_linear(wid, nwg) * WG_SIZE + lid;
    let q = op.slot_a;
    if (p < slot_len(q)) {
        let k = sidx(q, p) % cfg.d;
        let r = atomicAdd(&H[k], 1u);
        U[cfg.u_feat_entry + U[cfg.u_feat_start + k] + r] = p;
    }
}

// Each feature's list in entry order (insertion sort: lists are about s/d long), H[k] back to
// zero. One thread per feature.
@compute @workgroup_size(WG_SIZE)
fn feat_sort(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let k = wg_linear(wid, nwg) * WG_SIZE + lid;
    if (k >= cfg.d) {
        return;
    }
    atomicStore(&H[k], 0u);
    let base = cfg.u_feat_entry;
    let lo = U[cfg.u_feat_start + k];
    let hi = U[cfg.u_feat_start + k + 1u];
    for (var e = lo + 1u; e < hi; e = e + 1u) {
        let v = U[base + e];
        var f = e;
        while (f > lo && U[base + f - 1u] > v) {
            U[base + f] = U[base + f - 1u];
            f = f - 1u;
        }
        U[base + f] = v;
    }
}

// `apply` visiting the support feature by feature: a sample's feature k is read (or
// generated) once per pass however many neurons use it, where `apply` reads it once per
// entry. Same partial-prediction layout; chunks split the features that have entries.
@compute @workgroup_size(WG_SIZE)
fn apply_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let a = partial_sample(wid, nwg, lid);
    let chunk = wid.y;
    let nact = op.n_act;
    if (a >= nact) {
        return;
    }
    let q = op.slot_a;
    let i = sample_of(a);
    let span = chunk_span(U[cfg.u_meta + META_FEATS], chunk);
    let f0 = span.x;
    let f1 = span.y;
    var pred = 0.0;
    var comp = 0.0;
    for (var f = f0; f < f1; f = f + 1u) {
        let k = U[cfg.u_feat_list + f];
        let e0 = U[cfg.u_feat_start + k];
        let e1 = U[cfg.u_feat_start + k + 1u];
        let x = feat(i, k);
        for (var e = e0; e < e1; e = e + 1u) {
            let p = U[cfg.u_feat_entry + e];
            if (gate_open(U[cfg.u_entry_run + p], a)) {
                acc2(&pred, &comp, x, sval(q, p));
            }
        }
    }
    store_partial(chunk, a, pred, comp);
}

// `grad` visiting the support feature by feature: one workgroup per feature k, which reads
// the residual and feature k of every active sample once per GRAD_F_GROUP of the feature's
// entries, where `grad` reads them once per entry. Each entry's sum runs in `grad`'s order
// (thread lid takes samples lid, lid + WG_SIZE, …; then wg_sum).
var<workgroup> feat_lo_w: u32;
var<workgroup> feat_hi_w: u32;

@compute @workgroup_size(WG_SIZE)
fn grad_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    if (stopped(lid)) {
        return;
    }
    let k = wg_linear(wid, nwg);
    let q = op.slot_a;
    let len = slot_len(q);
    if (lid == 0u && k == 0u) {
        U[cfg.u_slot_len + op.slot_out] = len;
    }
    if (k >= cfg.d) {
        return;
    }
    if (lid == 0u) {
        feat_lo_w = U[cfg.u_feat_start + k];
        feat_hi_w = U[cfg.u_feat_start + k + 1u];
    }
    // Uniform bounds: the loop below calls wg_sum.
    let e0 = workgroupUniformLoad(&feat_lo_w);
    let e1 = workgroupUniformLoad(&feat_hi_w);
    // Four entries per sweep in registers (scalars, not an indexed array, which compilers
    // place in slow local memory).
    for (var g0 = e0; g0 < e1; g0 = g0 + GRAD_F_GROUP) {
        let cnt = min(GRAD_F_GROUP, e1 - g0);
        let r0 = U[cfg.u_entry_run + U[cfg.u_feat_entry + g0]];
        let r1 = U[cfg.u_entry_run + U[cfg.u_feat_entry + g0 + min(1u, cnt - 1u)]];
        let r2 = U[cfg.u_entry_run + U[cfg.u_feat_entry + g0 + min(2u, cnt - 1u)]];
        let r3 = U[cfg.u_entry_run + U[cfg.u_feat_entry + g0 + min(3u, cnt - 1u)]];
        var acc = vec4<f32>(0.0);
        for (var a = lid; a < op.n_act; a = a + WG_SIZE) {
            let rx = F[op.src_offset + a] * feat(sample_of(a), k);
            if (gate_open(r0, a)) {
                acc.x = acc.x + rx;
            }
            // Uniform tests: a feature with one entry costs what `grad` does.
            if (cnt > 1u && gate_open(r1, a)) {
                acc.y = acc.y + rx;
            }
            if (cnt > 2u && gate_open(r2, a)) {
                acc.z = acc.z + rx;
            }
            if (cnt > 3u && gate_open(r3, a)) {
                acc.w = acc.w + rx;
            }
        }
        // cnt is uniform (from the uniform bounds), as wg_sum's barriers need.
        for (var t = 0u; t < cnt; t = t + 1u) {
            let total = wg_sum(acc[t], lid);
            if (lid == 0u) {
                let p = U[cfg.u_feat_entry + g0 + t];
                F[cfg.f_slot_values + op.slot_out * cfg.slot_cap + p] = total;
                U[cfg.u_slot_indices + op.slot_out * cfg.slot_cap + p] = sidx(q, p);
            }
        }
    }
}
