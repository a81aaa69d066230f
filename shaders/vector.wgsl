// The vector-output network f(x) = W2ᵀ relu(W1 x) on its sparse support, one entry point per
// job (src/backend/vector/gpu.rs records them; src/backend/vector/cpu.rs is the oracle).
// Self-contained: it shares no declarations with common.wgsl.
//
// The support comes from the host as a plan: per unit with any entry, UNITS holds five u32
// (unit j, W1 entries [a, b), W2 entries [c, e)) indexing SCOL (feature or output of each
// entry) and SVAL (its value); ENT gives each entry's unit (an index into UNITS). Samples
// are addressed through IDX (position → sample id), X holds every sample's features.
//
// R holds two n×C residual blocks (current at 0, trial at p.r_off); L one loss per position.
// The dense pass works on a tile of p.t units from p.j0: GATE (t×d rows: W1 rows, or random
// gates for recruited units), TW (t×C W2 rows, then t flags "has W1 entries"), Z (n×t
// pre-activations, then from p.zh the passed-back residuals E and activations H), TG
// (t×(d+C) gradient). Every sum runs in a fixed order: results are deterministic.

struct VectorParams {
    rows: u32,    // active samples
    d: u32,
    c: u32,
    units: u32,   // units in the plan
    entries: u32, // support entries
    mode: u32,    // forward: 0 scores only, 1 squared error, 2 cross-entropy
    r_off: u32,   // forward: where the residual block is written; others: where it is read
    t: u32,       // tile units
    zh: u32,      // offset of E (then H at zh + rows·t) in Z
    inv_n: f32,   // 1 / rows
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: VectorParams;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read> Y: array<f32>;
@group(0) @binding(4) var<storage, read> UNITS: array<u32>;
@group(0) @binding(5) var<storage, read> SCOL: array<u32>;
@group(0) @binding(6) var<storage, read> SVAL: array<f32>;
@group(0) @binding(7) var<storage, read> ENT: array<u32>;
@group(0) @binding(8) var<storage, read_write> R: array<f32>;
@group(0) @binding(9) var<storage, read_write> L: array<f32>;
@group(0) @binding(10) var<storage, read_write> G: array<f32>;
@group(0) @binding(11) var<storage, read> GATE: array<f32>;
@group(0) @binding(12) var<storage, read> TW: array<f32>;
@group(0) @binding(13) var<storage, read_write> Z: array<f32>;
@group(0) @binding(14) var<storage, read_write> TG: array<f32>;

// Linear index of a 1-D job laid out on a 2-D grid (more workgroups than one dimension allows).
fn linear(wid: vec3<u32>, nwg: vec3<u32>, size: u32, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * size + lid;
}

// Pre-activation x_i · w1 of plan unit u at sample i.
fn pre(u: u32, i: u32) -> f32 {
    let xb = i * p.d;
    var z = 0.0;
    for (var q = UNITS[5u * u + 1u]; q < UNITS[5u * u + 2u]; q = q + 1u) {
        z = fma(X[xb + SCOL[q]], SVAL[q], z);
    }
    return z;
}

// Scores of position a into R (at p.r_off), then its loss into L and ∂loss/∂f in place.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let a = linear(wid, nwg, 64u, lid);
    if (a >= p.rows) {
        return;
    }
    let c = p.c;
    let i = IDX[a];
    let ob = p.r_off + a * c;
    for (var k = 0u; k < c; k = k + 1u) {
        R[ob + k] = 0.0;
    }
    for (var u = 0u; u < p.units; u = u + 1u) {
        let z = pre(u, i);
        if (z > 0.0) {
            for (var q = UNITS[5u * u + 3u]; q < UNITS[5u * u + 4u]; q = q + 1u) {
                R[ob + SCOL[q]] = fma(z, SVAL[q], R[ob + SCOL[q]]);
            }
        }
    }
    if (p.mode == 0u) {
        return;
    }
    var loss = 0.0;
    if (p.mode == 1u) {
        for (var k = 0u; k < c; k = k + 1u) {
            let e = R[ob + k] - Y[i * c + k];
            loss = fma(e, e, loss);
            R[ob + k] = 2.0 * e * p.inv_n;
        }
    } else {
        var mx = -3.4028235e38;
        for (var k = 0u; k < c; k = k + 1u) {
            mx = max(mx, R[ob + k]);
        }
        var sum = 0.0;
        for (var k = 0u; k < c; k = k + 1u) {
            sum = sum + exp(R[ob + k] - mx);
        }
        let label = u32(Y[i]);
        loss = mx + log(sum) - R[ob + label];
        for (var k = 0u; k < c; k = k + 1u) {
            let prob = exp(R[ob + k] - mx) / sum;
            R[ob + k] = (prob - select(0.0, 1.0, k == label)) * p.inv_n;
        }
    }
    L[a] = loss;
}

var<workgroup> red: array<f32, 64>;

fn tree(lid: u32) {
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w >> 1u) {
        if (lid < w) {
            red[lid] = red[lid] + red[lid + w];
        }
        workgroupBarrier();
    }
}

// The gradient of one support entry (a workgroup), summed over the active samples with the
// residual block at p.r_off: Σ 1[z > 0] x_k (R_a · W2_j) for a W1 entry, Σ relu(z) R_ac for
// a W2 entry.
@compute @workgroup_size(64)
fn support_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let q = wid.x + wid.y * nwg.x;
    if (q >= p.entries) {
        return;
    }
    let u = ENT[q];
    let first_layer = q < UNITS[5u * u + 2u];
    let c = p.c;
    var acc = 0.0;
    for (var a = lid; a < p.rows; a = a + 64u) {
        let i = IDX[a];
        let z = pre(u, i);
        if (z <= 0.0) {
            continue;
        }
        let rb = p.r_off + a * c;
        if (first_layer) {
            var e = 0.0;
            for (var q2 = UNITS[5u * u + 3u]; q2 < UNITS[5u * u + 4u]; q2 = q2 + 1u) {
                e = fma(R[rb + SCOL[q2]], SVAL[q2], e);
            }
            acc = fma(e, X[i * p.d + SCOL[q]], acc);
        } else {
            acc = fma(z, R[rb + SCOL[q]], acc);
        }
    }
    red[lid] = acc;
    tree(lid);
    if (lid == 0u) {
        G[q] = red[0];
    }
}

// Dense pass, step 1: Z[a, u] = x_a · GATE_u for the tile's units.
@compute @workgroup_size(64)
fn tile_z(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let o = linear(wid, nwg, 64u, lid);
    if (o >= p.rows * p.t) {
        return;
    }
    let a = o / p.t;
    let u = o % p.t;
    let xb = IDX[a] * p.d;
    let gb = u * p.d;
    var z = 0.0;
    for (var k = 0u; k < p.d; k = k + 1u) {
        z = fma(X[xb + k], GATE[gb + k], z);
    }
    Z[o] = z;
}

// Step 2: what each unit passes back where it is on, E = 1[z > 0] (R_a · W2_u), and its
// activation H = relu(z) (zero for a unit without W1 entries: its output is zero).
@compute @workgroup_size(64)
fn tile_eh(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let o = linear(wid, nwg, 64u, lid);
    let n = p.rows * p.t;
    if (o >= n) {
        return;
    }
    let a = o / p.t;
    let u = o % p.t;
    let z = Z[o];
    var e = 0.0;
    if (z > 0.0) {
        for (var k = 0u; k < p.c; k = k + 1u) {
            e = fma(R[p.r_off + a * p.c + k], TW[u * p.c + k], e);
        }
    }
    Z[p.zh + o] = e;
    Z[p.zh + n + o] = select(0.0, max(z, 0.0), TW[p.t * p.c + u] != 0.0);
}

// Step 3: the tile's gradient, one entry per thread: Σ_a E[a, u] x_ak (W1 part, k < d) and
// Σ_a H[a, u] R_ak (W2 part).
@compute @workgroup_size(64)
fn tile_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let w = p.d + p.c;
    let o = linear(wid, nwg, 64u, lid);
    if (o >= p.t * w) {
        return;
    }
    let u = o / w;
    let k = o % w;
    let n = p.rows * p.t;
    var acc = 0.0;
    if (k < p.d) {
        for (var a = 0u; a < p.rows; a = a + 1u) {
            acc = fma(Z[p.zh + a * p.t + u], X[IDX[a] * p.d + k], acc);
        }
    } else {
        let kc = k - p.d;
        for (var a = 0u; a < p.rows; a = a + 1u) {
            acc = fma(Z[p.zh + n + a * p.t + u], R[p.r_off + a * p.c + kc], acc);
        }
    }
    TG[o] = acc;
}
