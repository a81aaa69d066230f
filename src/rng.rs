//! Counter-based random numbers that the CPU and the WGSL kernels compute identically.
//!
//! Random gates `g_j` are never stored (ARCHITECTURE.md, "The model"): every backend regenerates entry `k` of
//! neuron `j` from `(seed, j, k)`. The hash uses only 32-bit integer operations so that
//! `shaders/common.wgsl` reproduces it bit for bit; the normal transform uses `ln`/`cos`, whose
//! last-ulp differences between CPU and GPU are harmless (a gate flips only when `x·g ≈ 0`).

/// `lowbias32` by Chris Wellons: a fast 32-bit integer hash with good avalanche.
#[inline]
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The per-neuron key: mixes the 64-bit seed and the neuron index.
#[inline]
pub fn gate_key(seed: u64, neuron: u32) -> u32 {
    let lo = seed as u32;
    let hi = (seed >> 32) as u32;
    hash32(hash32(hash32(lo) ^ hi) ^ neuron.wrapping_mul(0x9e37_79b9))
}

/// Uniform in (0, 1) from 24 random bits; never 0, so `ln` is finite.
#[inline]
fn unit(bits: u32) -> f32 {
    ((bits >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Standard normal entry `k` of the gate vector whose key is `key` (Box–Muller, cosine branch).
#[inline]
pub fn gate_normal(key: u32, k: u32) -> f32 {
    let a = hash32(key ^ hash32(k.wrapping_mul(2).wrapping_add(1)));
    let b = hash32(a ^ 0x68e3_1da4);
    let r = (-2.0 * unit(a).ln()).sqrt();
    r * (std::f32::consts::TAU * unit(b)).cos()
}

/// Fills `out` (length d) with the random gate vector `g_j` of neuron `j`.
pub fn gate_vector(seed: u64, neuron: u32, out: &mut [f32]) {
    let key = gate_key(seed, neuron);
    for (k, o) in out.iter_mut().enumerate() {
        *o = gate_normal(key, k as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_normals_look_standard() {
        let mut v = vec![0f32; 20000];
        gate_vector(7, 3, &mut v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        let mut w = vec![0f32; 20000];
        gate_vector(7, 4, &mut w);
        assert_ne!(v[..10], w[..10]);
    }
}
