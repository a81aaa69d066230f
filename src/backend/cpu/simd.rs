//! Wider vectors where the CPU has them, without giving up a portable binary: the release
//! build targets baseline x86-64 (SSE2, two f64 lanes), so the support passes' inner loops
//! are compiled a second time with AVX2 and chosen at run time.
//!
//! Results do not depend on which copy runs: Rust never contracts `a * b + c` into an FMA
//! and never reorders float sums, so both copies perform the same operations in the same
//! order, only more of them per instruction, so the support passes give the same bits on every
//! x86-64 machine. (A whole fit does so only for the same thread count and dense-pass kernel:
//! ARCHITECTURE.md, "Invariants".)

/// A pass's per-thread body. `run` must be `#[inline(always)]`, and so must everything it
/// calls that holds a hot loop: inlining is what compiles them into the AVX2 copy. (A closure
/// would not do: its body stays a function of its own, compiled for the baseline.)
pub(super) trait Body {
    type Out;
    /// `W`: this is the AVX2 copy (helpers with intrinsics may use them).
    fn run<const W: bool>(self) -> Self::Out;
}

/// Runs `body`, compiled for AVX2 when this CPU has it. Call it inside each worker's closure,
/// since rayon's jobs are separate functions.
#[inline(always)]
pub(super) fn wide<B: Body>(body: B) -> B::Out {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was just detected on this CPU.
            return unsafe { avx2(body) };
        }
    }
    body.run::<false>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<B: Body>(body: B) -> B::Out {
    body.run::<true>()
}

/// `Σ a_t · b_t` exactly as `columns::dot64`'s plain version computes it: lanes `0..4` and
/// `4..8` of every group of eight in two accumulators, combined pairwise, then the tail.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn dot64_avx2(a: &[f64], b: &[f32]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut c = 0;
    while c + 8 <= n {
        // SAFETY: c + 8 ≤ n bounds every load.
        unsafe {
            let x = _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr().add(c)));
            let y = _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr().add(c + 4)));
            lo = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_loadu_pd(a.as_ptr().add(c)), x));
            hi = _mm256_add_pd(hi, _mm256_mul_pd(_mm256_loadu_pd(a.as_ptr().add(c + 4)), y));
        }
        c += 8;
    }
    let (mut l, mut h) = ([0f64; 4], [0f64; 4]);
    // SAFETY: four f64 each.
    unsafe {
        _mm256_storeu_pd(l.as_mut_ptr(), lo);
        _mm256_storeu_pd(h.as_mut_ptr(), hi);
    }
    let mut s = ((l[0] + h[0]) + (l[1] + h[1])) + ((l[2] + h[2]) + (l[3] + h[3]));
    for t in c..n {
        s += a[t] * b[t] as f64;
    }
    s
}
