//! Wider vectors where the CPU has them, without giving up a portable binary: the release
//! build targets baseline x86-64 (SSE2, two f64 lanes), so the support passes' inner loops
//! are compiled a second time with AVX2 and FMA and chosen at run time.
//!
//! Results do not depend on which copy runs: Rust never contracts `a * b + c` into an FMA
//! and never reorders float sums, so both copies perform the same operations in the same
//! order, only more of them per instruction. The one fused multiply-add used ([`madd`]) is
//! used where the product is of two f32 values, which f64 holds exactly, so it rounds as the
//! separate multiply and add do. So the support passes give the same bits on every x86-64
//! machine. (A whole fit does so only for the same thread count and dense-pass kernel:
//! ARCHITECTURE.md, "Invariants".)

/// A pass's per-thread body. `run` must be `#[inline(always)]`, and so must everything it
/// calls that holds a hot loop: inlining is what compiles them into the AVX2 copy. (A closure
/// would not do: its body stays a function of its own, compiled for the baseline.)
pub(super) trait Body {
    type Out;
    /// `W`: this is the AVX2 copy (helpers with intrinsics may use them).
    fn run<const W: bool>(self) -> Self::Out;
}

/// Runs `body`, compiled for AVX2 and FMA when this CPU has them. Call it inside each
/// worker's closure, since rayon's jobs are separate functions.
#[inline(always)]
pub(super) fn wide<B: Body>(body: B) -> B::Out {
    #[cfg(target_arch = "x86_64")]
    {
        if has_wide() {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(body) };
        }
    }
    body.run::<false>()
}

/// Whether this CPU runs the wide copies (AVX2 and FMA; every AVX2 CPU made has FMA too).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn has_wide() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<B: Body>(body: B) -> B::Out {
    body.run::<true>()
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `acc + a·x`. With `EXACT` the caller promises that every lane of `a` holds an f32 value:
/// the product of two f32 values is exact in f64, so rounding `acc + a·x` once (a fused
/// multiply-add) gives the same bits as rounding the product and then the sum, in one
/// instruction and one latency instead of two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn madd<const EXACT: bool>(acc: __m256d, a: __m256d, x: __m256d) -> __m256d {
    match EXACT {
        true => _mm256_fmadd_pd(a, x, acc),
        false => _mm256_add_pd(acc, _mm256_mul_pd(a, x)),
    }
}

/// Four f32 from `p`, widened.
///
/// # Safety
/// `p..p + 4` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load4(p: *const f32) -> __m256d {
    // SAFETY: the caller's bounds.
    _mm256_cvtps_pd(unsafe { _mm_loadu_ps(p) })
}

/// Sums two accumulators of a dot product as `columns::dot64`'s plain version does, then the
/// tail from `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn finish(lo: __m256d, hi: __m256d, a: &[f64], b: &[f32], c: usize) -> f64 {
    let (mut l, mut h) = ([0f64; 4], [0f64; 4]);
    // SAFETY: four f64 each.
    unsafe {
        _mm256_storeu_pd(l.as_mut_ptr(), lo);
        _mm256_storeu_pd(h.as_mut_ptr(), hi);
    }
    let mut s = ((l[0] + h[0]) + (l[1] + h[1])) + ((l[2] + h[2]) + (l[3] + h[3]));
    for t in c..a.len().min(b.len()) {
        s += a[t] * b[t] as f64;
    }
    s
}

/// `Σ a_t · b_t` exactly as `columns::dot64`'s plain version computes it: lanes `0..4` and
/// `4..8` of every group of eight in two accumulators, combined pairwise, then the tail.
/// `EXACT`: every `a_t` is an f32 value ([`madd`]).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn dot64_avx2<const EXACT: bool>(a: &[f64], b: &[f32]) -> f64 {
    // SAFETY: the caller's.
    let [d] = unsafe { dots64_avx2::<1, EXACT>(a, [b]) };
    d
}

/// `N` [`dot64_avx2`]s sharing `a`, interleaved so that their accumulator chains hide each
/// other's latency; each result rounds exactly as its own `dot64_avx2` would (every `b` as
/// long as `a`: a block's column segments).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn dots64_avx2<const N: usize, const EXACT: bool>(
    a: &[f64],
    b: [&[f32]; N],
) -> [f64; N] {
    debug_assert!(N == 1 || b.iter().all(|b| b.len() == a.len()));
    let n = b.iter().fold(a.len(), |n, b| n.min(b.len()));
    let mut lo = [_mm256_setzero_pd(); N];
    let mut hi = [_mm256_setzero_pd(); N];
    let mut c = 0;
    while c + 8 <= n {
        // SAFETY: c + 8 ≤ n bounds every load.
        unsafe {
            let pa = a.as_ptr().add(c);
            let (al, ah) = (_mm256_loadu_pd(pa), _mm256_loadu_pd(pa.add(4)));
            for e in 0..N {
                let pb = b[e].as_ptr().add(c);
                lo[e] = madd::<EXACT>(lo[e], al, load4(pb));
                hi[e] = madd::<EXACT>(hi[e], ah, load4(pb.add(4)));
            }
        }
        c += 8;
    }
    std::array::from_fn(|e| finish(lo[e], hi[e], a, b[e], c))
}

/// Samples summed together in registers by [`lanes_avx2`] (eight AVX2 registers of f64).
pub(super) const LANES: usize = 32;

/// `out[t] = Σ_e w_e · xt[offsets_e + t]` for `t < LANES`, entry by entry in order from 0, as
/// the plain loop of `columns::Pass::pre_activations` rounds it (each product of two f32 is
/// exact, so [`madd`] fuses it).
///
/// # Safety
/// The CPU must have AVX2 and FMA, and `offsets_e + LANES ≤ xt.len()` for every entry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn lanes_avx2(
    w: &[f32],
    offsets: impl Iterator<Item = usize>,
    xt: &[f32],
    out: &mut [f64; LANES],
) {
    let mut acc = [_mm256_setzero_pd(); LANES / 4];
    for (&wv, at) in w.iter().zip(offsets) {
        debug_assert!(at + LANES <= xt.len());
        let wv = _mm256_set1_pd(wv as f64);
        // SAFETY: the caller's bounds.
        let p = unsafe { xt.as_ptr().add(at) };
        for (q, a) in acc.iter_mut().enumerate() {
            // SAFETY: q·4 + 4 ≤ LANES.
            *a = madd::<true>(*a, wv, unsafe { load4(p.add(4 * q)) });
        }
    }
    for (q, a) in acc.iter().enumerate() {
        // SAFETY: four f64 at q·4 < LANES.
        unsafe { _mm256_storeu_pd(out.as_mut_ptr().add(4 * q), *a) };
    }
}
