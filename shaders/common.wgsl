// Shared by every spinr kernel: prepended to each shaders/*.wgsl file (WGSL has no includes),
// after the prelude generated from src/backend/gpu/interface.rs (the Cfg and Op blocks, the
// bindings, the constants shared with Rust). The hash RNG of src/rng.rs, feature and gate
// evaluation, workgroup reductions.

// ---- hash RNG: bit-exact port of src/rng.rs ----

fn hash32(x_in: u32) -> u32 {
    var x = x_in;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn gate_key(neuron: u32) -> u32 {
    return hash32(hash32(hash32(cfg.gate_seed_lo) ^ cfg.gate_seed_hi) ^ (neuron * 0x9e3779b9u));
}

fn unit01(bits: u32) -> f32 {
    return (f32(bits >> 8u) + 0.5) * (1.0 / 16777216.0);
}

// ln(u) for normal u > 0 to about 1 ulp: the built-in log may be a coarse approximation.
fn ln_acc(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = i32((bits >> 23u) & 0xffu) - 127;
    var mant = bitcast<f32>((bits & 0x7fffffu) | 0x3f800000u);
    if (mant > 1.41421356) {
        mant = mant * 0.5;
        e = e + 1;
    }
    let z = (mant - 1.0) / (mant + 1.0);
    let z2 = z * z;
    let lm = 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0)))));
    let fe = f32(e);
    return fe * 0.693145751953125 + (lm + fe * 1.428606820309417e-6);
}

// (sin, cos) of 2π·p. Quadrant reduction in units of turns is exact, so the polynomials only
// see |θ| ≤ π/4: accurate to ~1e-7 on every device (WGSL's sin/cos allow 2^-11 error).
fn sincos2pi(p: f32) -> vec2<f32> {
    let q = round(4.0 * p);
    let r = p - 0.25 * q;
    let t = 6.283185307179586 * r;
    let t2 = t * t;
    let s = t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (1.0 / 362880.0)))));
    let c = 1.0 + t2 * (-0.5 + t2 * (1.0 / 24.0 + t2 * (-1.0 / 720.0 + t2 * (1.0 / 40320.0 + t2 * (-1.0 / 3628800.0)))));
    let qi = u32(i32(q)) & 3u;
    if (qi == 0u) {
        return vec2<f32>(s, c);
    } else if (qi == 1u) {
        return vec2<f32>(c, -s);
    } else if (qi == 2u) {
        return vec2<f32>(-s, -c);
    }
    return vec2<f32>(-c, s);
}

// Entry k of the standard-normal gate vector with key `key` (Box–Muller, cosine branch).
fn gate_normal(key: u32, k: u32) -> f32 {
    let a = hash32(key ^ hash32(k * 2u + 1u));
    let b = hash32(a ^ 0x68e31da4u);
    let r = sqrt(-2.0 * ln_acc(unit01(a)));
    return r * sincos2pi(unit01(b)).y;
}

// ---- features ----

fn xdense(i: u32, k: u32) -> f32 {
    if (cfg.x_feature_major == 0u) {
        return xrow(i, k);
    }
    let c = cfg.x_lines_per_binding;
    let n = cfg.n;
    if (k < c) {
        return x0[k * n + i];
    }
    if (k < 2u * c) {
        return x1[(k - c) * n + i];
    }
    if (k < 3u * c) {
        return x2[(k - 2u * c) * n + i];
    }
    return x3[(k - 3u * c) * n + i];
}

// X[i, k] from the sample-major layout (x_lines_per_binding = rows per binding).
fn xrow(i: u32, k: u32) -> f32 {
    let r = cfg.x_lines_per_binding;
    let d = cfg.d;
    if (i < r) {
        return x0[i * d + k];
    }
    if (i < 2u * r) {
        return x1[(i - r) * d + k];
    }
    if (i < 3u * r) {
        return x2[(i - 2u * r) * d + k];
    }
    return x3[(i - 3u * r) * d + k];
}

// Where sample i's entries sit in each axis table (frequency 0), and the axis lengths.
struct GridRef {
    base: vec4<u32>,
    len: vec4<u32>,
}

fn grid_ref(i: u32) -> GridRef {
    let len = cfg.grid_axis_len;
    let off = cfg.grid_table_offset;
    var base = vec4<u32>(0u);
    var rest = i;
    // Row-major multi-index: the last axis varies fastest.
    for (var a = i32(cfg.grid_axes) - 1; a >= 0; a = a - 1) {
        let t = rest % len[a];
        rest = rest / len[a];
        base[a] = off[a] + t;
    }
    return GridRef(base, len);
}

// fract(Σ_a table_a[f, t_a]), summed in axis order exactly as GridFourier::fill_row.
fn grid_phase(g: GridRef, f: u32) -> f32 {
    var sum = 0.0;
    for (var a = 0u; a < cfg.grid_axes; a = a + 1u) {
        sum = sum + F[g.base[a] + f * g.len[a]];
    }
    return sum - floor(sum);
}

fn grid_feat(g: GridRef, k: u32) -> f32 {
    let h = cfg.grid_half;
    if (k < h) {
        return sincos2pi(grid_phase(g, k)).x;
    }
    return sincos2pi(grid_phase(g, k - h)).y;
}

// Feature k of sample i (dense matrix or Fourier features generated on the fly).
fn feat(i: u32, k: u32) -> f32 {
    if (cfg.grid_features == 0u) {
        return xdense(i, k);
    }
    return grid_feat(grid_ref(i), k);
}

// Features k..k+3 of sample i (zero beyond d): one multi-index for the four on a grid.
fn feat4(i: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let d = cfg.d;
    if (cfg.grid_features == 0u) {
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (k + c < d) {
                v[c] = xdense(i, k + c);
            }
        }
    } else {
        let g = grid_ref(i);
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (k + c < d) {
                v[c] = grid_feat(g, k + c);
            }
        }
    }
    return v;
}

// ---- compensated sums ----

// s + c += a·b keeping the rounding errors of the product (Dekker's split) and of the sum
// (TwoSum) in c: near a fit's optimum the residual A v − y is tiny against the terms, and a
// plain f32 sum would put a floor of ~1e-7 relative under it (the CPU accumulates in f64).
// `cfg.zero` is 0 at run time but opaque to the compiler, which could otherwise simplify the
// error terms away (drivers may apply inexact algebra; fma may be unfused).
fn split(a: f32) -> vec2<f32> {
    let c = 4097.0 * a + cfg.zero;
    let hi = c - (c - a);
    return vec2<f32>(hi, a - hi);
}

fn acc2(s: ptr<function, f32>, c: ptr<function, f32>, a: f32, b: f32) {
    let p = a * b;
    let sa = split(a);
    let sb = split(b);
    let ep = ((sa.x * sb.x - p) + sa.x * sb.y + sa.y * sb.x) + sa.y * sb.y;
    let t = *s + p;
    let bp = (t + cfg.zero) - *s;
    let es = (*s - (t - bp)) + (p - bp);
    *s = t;
    *c = *c + (es + ep);
}

// ---- the refinement's scalar decisions ----

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// The host's Armijo test `f_t ≤ f_v − 0.9·μ·gn` (in f64 there) and gn ≠ 0. In f32,
// `f_v − 0.9·μ·gn` rounds to f_v near convergence, which would accept losses that went up by
// less than an f32 ulp. Instead d = f_v − f_t, exact when the two are close (Sterbenz), which
// is when the test is close, against c = 0.9·μ·gn (its own ~1e-7 relative rounding decides
// nothing in practice). An unchanged loss (d = 0) passes on the host iff f_v − c rounds back
// to f_v in f64: c at most half an f64 ulp below f_v.
fn armijo(fv: f32, ft: f32, mu: f32, gn: f32) -> bool {
    if (!(gn > 0.0)) {
        return false;
    }
    let c = 0.9 * mu * gn;
    if (!is_finite(fv) || !is_finite(ft)) {
        return ft <= fv - c;
    }
    let d = fv - ft;
    if (d != 0.0) {
        return d >= c; // d < 0 fails: c ≥ 0
    }
    if (fv == 0.0) {
        return mu == 0.0;
    }
    // fv = fract·2^exp, fract ∈ [0.5, 1): half the f64 ulp below fv is 2^(exp − 54), halved
    // again at a power of two (a tie rounds to fv: its f64 mantissa ends in zeros).
    let fr = frexp(fv);
    var e = fr.exp - 54;
    if (fr.fract == 0.5) {
        e = e - 1;
    }
    return c <= ldexp(1.0, e);
}

// ---- samples, slots, gates ----

// Sample id of active position a (the minibatch list, or a itself).
fn sample_of(a: u32) -> u32 {
    if (op.batched != 0u) {
        return U[cfg.u_batch + a];
    }
    return a;
}

fn slot_len(q: u32) -> u32 {
    return U[cfg.u_slot_len + q];
}

fn sidx(q: u32, p: u32) -> u32 {
    return U[cfg.u_slot_indices + q * cfg.slot_cap + p];
}

fn sval(q: u32, p: u32) -> f32 {
    return F[cfg.f_slot_values + q * cfg.slot_cap + p];
}

// Gate of support run `run` at active position a, from the cached bit mask.
fn gate_open(run: u32, a: u32) -> bool {
    if (cfg.gate_mode == GATE_OPEN) {
        return true;
    }
    return ((U[cfg.u_run_mask + run * cfg.mask_words + (a >> 5u)] >> (a & 31u)) & 1u) != 0u;
}

// Weight gates: pre-activation h_j · x_i over the gate snapshot's entries of neuron j.
fn pre_weights(i: u32, j: u32) -> f32 {
    let lo = U[cfg.u_gate_range + j];
    let hi = U[cfg.u_gate_range + cfg.m + j];
    let q = cfg.gate_slot;
    let jd = j * cfg.d;
    var pre = 0.0;
    var p = lo;
    // Four entries at a time: independent loads in flight hide their latency (the sum
    // order is unchanged).
    for (; p + 4u <= hi; p = p + 4u) {
        let k = vec4<u32>(sidx(q, p), sidx(q, p + 1u), sidx(q, p + 2u), sidx(q, p + 3u)) - jd;
        let w = vec4<f32>(sval(q, p), sval(q, p + 1u), sval(q, p + 2u), sval(q, p + 3u));
        let x = vec4<f32>(feat(i, k.x), feat(i, k.y), feat(i, k.z), feat(i, k.w));
        pre = pre + x.x * w.x;
        pre = pre + x.y * w.y;
        pre = pre + x.z * w.z;
        pre = pre + x.w * w.w;
    }
    for (; p < hi; p = p + 1u) {
        pre = pre + feat(i, sidx(q, p) - jd) * sval(q, p);
    }
    return pre;
}

// pre_weights at four samples at once: the entries are read once, the four feature reads
// are independent (each component sums in the same order as pre_weights).
fn pre_weights4(i: vec4<u32>, j: u32) -> vec4<f32> {
    let lo = U[cfg.u_gate_range + j];
    let hi = U[cfg.u_gate_range + cfg.m + j];
    let q = cfg.gate_slot;
    let jd = j * cfg.d;
    var pre = vec4<f32>(0.0);
    for (var p = lo; p < hi; p = p + 1u) {
        let k = sidx(q, p) - jd;
        let x = vec4<f32>(feat(i.x, k), feat(i.y, k), feat(i.z, k), feat(i.w, k));
        pre = pre + x * sval(q, p);
    }
    return pre;
}

// Selection key of a candidate: |c| as sortable bits, plus one so that 0 means "excluded".
fn mag_key(v: f32) -> u32 {
    return (bitcast<u32>(v) & 0x7fffffffu) + 1u;
}

// Workgroup index of a 1-D job dispatched as a 2-D grid (dimension limit 65535).
fn wg_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// ---- workgroup reductions and scans (call from uniform control flow) ----

var<workgroup> red_f: array<f32, WG_SIZE>;
var<workgroup> scan_u: array<u32, WG_SIZE>;

var<workgroup> stop_w: u32;

// Whether the speculative refinement chain this dispatch belongs to (FLAG_GUARD) has stopped:
// then the whole workgroup returns at once. Call first thing, from uniform control flow.
fn stopped(lid: u32) -> bool {
    if ((op.flags & FLAG_GUARD) == 0u) {
        return false;
    }
    if (lid == 0u) {
        stop_w = U[cfg.u_meta + META_STOP];
    }
    return workgroupUniformLoad(&stop_w) != 0u;
}

// Sum over the workgroup, in a fixed tree order (deterministic).
fn wg_sum(v: f32, lid: u32) -> f32 {
    red_f[lid] = v;
    workgroupBarrier();
    for (var off = WG_SIZE / 2u; off > 0u; off = off >> 1u) {
        if (lid < off) {
            red_f[lid] = red_f[lid] + red_f[lid + off];
        }
        workgroupBarrier();
    }
    let total = red_f[0];
    workgroupBarrier();
    return total;
}

// Inclusive prefix sum over the workgroup; returns (inclusive, total).
fn wg_scan(v: u32, lid: u32) -> vec2<u32> {
    scan_u[lid] = v;
    workgroupBarrier();
    for (var off = 1u; off < WG_SIZE; off = off << 1u) {
        var t = 0u;
        if (lid >= off) {
            t = scan_u[lid - off];
        }
        workgroupBarrier();
        scan_u[lid] = scan_u[lid] + t;
        workgroupBarrier();
    }
    let r = vec2<u32>(scan_u[lid], scan_u[WG_SIZE - 1u]);
    workgroupBarrier();
    return r;
}
