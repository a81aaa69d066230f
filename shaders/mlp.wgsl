// The dense two-layer network of IMP, f(x) = Vᵀ relu(U x), one entry point per job
// (src/imp/gpu/ records them; src/imp/cpu.rs is the oracle). Self-contained: it shares no
// declarations with common.wgsl.
//
// Layout: W = [U | V] (U row-major m×d, V row-major m×C from p.v_off), and the gradient G,
// the Adam moments M1, M2 and the mask likewise. X holds feature rows (d floats per sample):
// every sample (F_RESIDENT: row = sample id) or the current block's rows in order (streamed
// from the host). H is the block's b×m hidden activations, overwritten by its gradient; RL
// holds the block's b×C outputs or dL/dO, then from p.loss_off one loss per batch position.
//
// Per block: mm_h, head, grad_v, grad_h, mm_gu; per update: adam; per loss: reduce. Every sum
// runs in a fixed order (no float atomics), so results are deterministic.

struct P {
    rows: u32,      // samples in this block
    a0: u32,        // the block's first position in the batch
    flags: u32,
    mode: u32,      // head: 0 outputs, 1 MSE, 2 cross-entropy
    d: u32,
    m: u32,
    c: u32,
    nw: u32,        // weights m·d + m·C
    v_off: u32,     // V's offset (m·d)
    loss_off: u32,  // per-sample losses' offset in RL
    count: u32,     // reduce: losses to sum
    slot: u32,      // reduce: the SCAL entry written
    inv_norm: f32,  // 1/(N·C) (MSE) or 1/N (CE) for a batch of N samples
    step: f32,      // Adam: lr / (1 − β1ᵗ)
    bc2s: f32,      // √(1 − β2ᵗ)
    beta2: f32,
    omb1: f32,      // 1 − β1
    omb2: f32,      // 1 − β2
    eps: f32,
    pad1: f32,
}

const F_GATHER: u32 = 1u;    // sample of position a = IDX[a0 + a] (a minibatch)
const F_RESIDENT: u32 = 2u;  // X row of a sample = its id (else the block row)
const F_ACC: u32 = 4u;       // add to the gradient (a later block)

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> W: array<f32>;
@group(0) @binding(5) var<storage, read_write> G: array<f32>;
@group(0) @binding(6) var<storage, read_write> M1: array<f32>;
@group(0) @binding(7) var<storage, read_write> M2: array<f32>;
@group(0) @binding(8) var<storage, read> MASK: array<f32>;
@group(0) @binding(9) var<storage, read_write> H: array<f32>;
@group(0) @binding(10) var<storage, read_write> RL: array<f32>;
@group(0) @binding(11) var<storage, read_write> SCAL: array<f32>;

fn sample_of(a: u32) -> u32 {
    if ((p.flags & F_GATHER) != 0u) {
        return IDX[p.a0 + a];
    }
    return p.a0 + a;
}

fn xrow(a: u32) -> u32 {
    if ((p.flags & F_RESIDENT) != 0u) {
        return sample_of(a);
    }
    return a;
}

// Linear index of a 1-D job laid out on a 2-D grid (more workgroups than one dimension allows).
fn linear(wid: vec3<u32>, nwg: vec3<u32>, size: u32, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * size + lid;
}

// ---- tiled products ----
// A workgroup computes a T × T block of the output; per step of BK along the reduction the
// BK × T slices of both operands go through workgroup memory, then each thread accumulates a
// 4 × 4 register block (rows ty·4 + {0..3}, columns tx·4 + {0..3}) from two vec4 reads per 16
// multiply-adds (the register blocking of dense.wgsl at a quarter of its tile: these
// products have a few hundred rows, and smaller tiles keep more workgroups busy).

const T: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> sa: array<f32, 1024>;  // BK × T, reduction-major
var<workgroup> sb: array<f32, 1024>;

struct Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

fn mac(acc: ptr<function, Acc>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk = kk + 1u) {
        let o = kk * T;
        let av = vec4<f32>(sa[o + ty * 4u], sa[o + ty * 4u + 1u], sa[o + ty * 4u + 2u], sa[o + ty * 4u + 3u]);
        let bv = vec4<f32>(sb[o + tx * 4u], sb[o + tx * 4u + 1u], sb[o + tx * 4u + 2u], sb[o + tx * 4u + 3u]);
        (*acc).r0 = fma(vec4<f32>(av.x), bv, (*acc).r0);
        (*acc).r1 = fma(vec4<f32>(av.y), bv, (*acc).r1);
        (*acc).r2 = fma(vec4<f32>(av.z), bv, (*acc).r2);
        (*acc).r3 = fma(vec4<f32>(av.w), bv, (*acc).r3);
    }
}

fn acc_row(acc: Acc, r: u32) -> vec4<f32> {
    switch r {
        case 0u: { return acc.r0; }
        case 1u: { return acc.r1; }
        case 2u: { return acc.r2; }
        default: { return acc.r3; }
    }
}

// H[a, j] = relu(Σ_k X[row(a), k] · U[j, k]). Grid (⌈m/T⌉, ⌈rows/T⌉).
@compute @workgroup_size(256)
fn mm_h(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j0 = wid.x * T;
    let a0 = wid.y * T;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Loader: one row of each operand (a sample, a neuron), four consecutive k.
    let lr = lid / 4u;
    let lk = (lid % 4u) * 4u;
    let a_ok = a0 + lr < p.rows;
    var xb = 0u;
    if (a_ok) {
        xb = xrow(a0 + lr) * p.d;
    }
    let j_ok = j0 + lr < p.m;
    let ub = (j0 + lr) * p.d;
    var acc: Acc;
    for (var k0 = 0u; k0 < p.d; k0 = k0 + BK) {
        for (var q = 0u; q < 4u; q = q + 1u) {
            let k = k0 + lk + q;
            var xv = 0.0;
            if (a_ok && k < p.d) {
                xv = X[xb + k];
            }
            var uv = 0.0;
            if (j_ok && k < p.d) {
                uv = W[ub + k];
            }
            sa[(lk + q) * T + lr] = xv;
            sb[(lk + q) * T + lr] = uv;
        }
        workgroupBarrier();
        mac(&acc, tx, ty);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let a = a0 + ty * 4u + r;
        let row = acc_row(acc, r);
        for (var cc = 0u; cc < 4u; cc = cc + 1u) {
            let j = j0 + tx * 4u + cc;
            if (a < p.rows && j < p.m) {
                H[a * p.m + j] = max(row[cc], 0.0);
            }
        }
    }
}

// ∇U[j, k] (+)= Σ_a G_H[a, j] · X[row(a), k] over the block's rows, G_H in H.
// Grid (⌈d/T⌉, ⌈m/T⌉).
@compute @workgroup_size(256)
fn mm_gu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k0 = wid.x * T;
    let j0 = wid.y * T;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Loader: one sample of the step, four consecutive neurons and features.
    let lr = lid / 16u;
    let lc = (lid % 16u) * 4u;
    var acc: Acc;
    for (var b0 = 0u; b0 < p.rows; b0 = b0 + BK) {
        let a = b0 + lr;
        let ok = a < p.rows;
        var hb = 0u;
        var xb = 0u;
        if (ok) {
            hb = a * p.m;
            xb = xrow(a) * p.d;
        }
        for (var q = 0u; q < 4u; q = q + 1u) {
            let j = j0 + lc + q;
            var hv = 0.0;
            if (ok && j < p.m) {
                hv = H[hb + j];
            }
            let k = k0 + lc + q;
            var xv = 0.0;
            if (ok && k < p.d) {
                xv = X[xb + k];
            }
            sa[lr * T + lc + q] = hv;
            sb[lr * T + lc + q] = xv;
        }
        workgroupBarrier();
        mac(&acc, tx, ty);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let j = j0 + ty * 4u + r;
        let row = acc_row(acc, r);
        for (var cc = 0u; cc < 4u; cc = cc + 1u) {
            let k = k0 + tx * 4u + cc;
            if (j < p.m && k < p.d) {
                let e = j * p.d + k;
                if ((p.flags & F_ACC) != 0u) {
                    G[e] = G[e] + row[cc];
                } else {
                    G[e] = row[cc];
                }
            }
        }
    }
}

// ---- output layer and loss ----

// Per sample a: O = H[a] V into RL; with a loss, the per-sample loss (RL[loss_off + a0 + a])
// and dL/dO in place of O (src/imp/mlp.rs `head_sample`, the same operations).
@compute @workgroup_size(64)
fn head(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let a = linear(wid, nwg, 64u, lid);
    if (a >= p.rows) {
        return;
    }
    let c = p.c;
    let hb = a * p.m;
    let ob = a * c;
    var mx = -3.4028235e38;
    for (var cc = 0u; cc < c; cc = cc + 1u) {
        var s = 0.0;
        for (var j = 0u; j < p.m; j = j + 1u) {
            s = fma(H[hb + j], W[p.v_off + j * c + cc], s);
        }
        RL[ob + cc] = s;
        mx = max(mx, s);
    }
    if (p.mode == 0u) {
        return;
    }
    let i = sample_of(a);
    var loss = 0.0;
    if (p.mode == 1u) {
        for (var cc = 0u; cc < c; cc = cc + 1u) {
            let e = RL[ob + cc] - Y[i * c + cc];
            loss = loss + e * e;
            RL[ob + cc] = 2.0 * e * p.inv_norm;
        }
        loss = loss / f32(c);
    } else {
        var se = 0.0;
        for (var cc = 0u; cc < c; cc = cc + 1u) {
            se = se + exp(RL[ob + cc] - mx);
        }
        let lse = mx + log(se);
        let label = u32(Y[i]);
        loss = lse - RL[ob + label];
        for (var cc = 0u; cc < c; cc = cc + 1u) {
            var t = 0.0;
            if (cc == label) {
                t = 1.0;
            }
            RL[ob + cc] = (exp(RL[ob + cc] - lse) - t) * p.inv_norm;
        }
    }
    RL[p.loss_off + p.a0 + a] = loss;
}

var<workgroup> red: array<f32, 256>;

// Tree sum of red[0..256] (every thread calls it); the total ends in red[0].
fn tree(lid: u32) {
    for (var w = 128u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (lid < w) {
            red[lid] = red[lid] + red[lid + w];
        }
    }
    workgroupBarrier();
}

// ∇V[j, c] (+)= Σ_a H[a, j] · dL/dO[a, c]: a workgroup per (j, c), threads strided over
// the rows, then a tree. Grid: m·C workgroups (linearised).
@compute @workgroup_size(256)
fn grad_v(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let e = wid.x + wid.y * nwg.x;
    if (e >= p.m * p.c) {
        return;
    }
    let j = e / p.c;
    let cc = e % p.c;
    var s = 0.0;
    for (var a = lid; a < p.rows; a = a + 256u) {
        s = fma(H[a * p.m + j], RL[a * p.c + cc], s);
    }
    red[lid] = s;
    tree(lid);
    if (lid == 0u) {
        let o = p.v_off + e;
        if ((p.flags & F_ACC) != 0u) {
            G[o] = G[o] + red[0];
        } else {
            G[o] = red[0];
        }
    }
}

// H[a, j] ← (Σ_c dL/dO[a, c] · V[j, c]) · 1[H[a, j] > 0]: the gradient at the hidden layer.
@compute @workgroup_size(256)
fn grad_h(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let e = linear(wid, nwg, 256u, lid);
    if (e >= p.rows * p.m) {
        return;
    }
    let a = e / p.m;
    let j = e % p.m;
    var s = 0.0;
    if (H[e] > 0.0) {
        for (var cc = 0u; cc < p.c; cc = cc + 1u) {
            s = fma(RL[a * p.c + cc], W[p.v_off + j * p.c + cc], s);
        }
    }
    H[e] = s;
}

// ---- optimiser and loss ----

// The masked Adam update of every weight (src/imp/adam.rs `update_one`, the same operations).
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, 256u, lid);
    if (i >= p.nw) {
        return;
    }
    if (MASK[i] == 0.0) {
        W[i] = 0.0;
        M1[i] = 0.0;
        M2[i] = 0.0;
        return;
    }
    let g = G[i];
    let a = M1[i] + p.omb1 * (g - M1[i]);
    let b = M2[i] * p.beta2 + p.omb2 * g * g;
    M1[i] = a;
    M2[i] = b;
    let denom = sqrt(b) / p.bc2s + p.eps;
    W[i] = W[i] - p.step * a / denom;
}

// SCAL[p.slot] = Σ of the p.count per-sample losses: one workgroup, threads strided, then a tree.
@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.count; i = i + 256u) {
        s = s + RL[p.loss_off + i];
    }
    red[lid] = s;
    tree(lid);
    if (lid == 0u) {
        SCAL[p.slot] = red[0];
    }
}
