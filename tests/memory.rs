//! Working memory of a fit, counted by a global allocator: linear in `s` and `n`, never
//! proportional to `m·d`, `n·m` or (generated features) `n·d`.
//! One test only: the counter sees every thread of this binary.

use spinr::backend::cpu::CpuBackend;
use spinr::iht::{self, IhtConfig};
use spinr::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn problem(m: usize) -> Problem {
    let (h, w, d) = (40, 30, 64);
    let spec = FourierSpec {
        d,
        seed: 1,
        sigma: vec![8.0, 8.0],
        coords: vec![AxisCoords::Unit, AxisCoords::Unit],
        constant_feature: true,
        given: Vec::new(),
    };
    let g = spec.grid(&[h, w]).unwrap();
    let y = (0..h * w).map(|i| ((i % 7) as f32) / 7.0).collect();
    Problem::new(d, m, Features::Grid(g), y, GateMode::Sequential, 2).unwrap()
}

/// Peak bytes allocated above the baseline while creating the backend and fitting.
/// `budget`: the feature cache (0: the row path; 1 GiB: the column path, features held
/// feature-major and gate masks cached).
fn peak_of_fit(p: Problem, s: usize, budget: u64, batched: bool) -> (u64, u64, u64) {
    let p = Arc::new(p);
    let threads = rayon::current_num_threads();
    let bound = CpuBackend::working_memory_bound(&p, s, threads, budget);
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let tile = {
        let mut b = CpuBackend::new(p.clone(), s, budget).unwrap();
        let mut cfg = IhtConfig::new(s, 3, GateMode::Sequential);
        if batched {
            // Growing minibatches: the epoch's layout of the features, or a batch's copy.
            cfg.batch_size = Some(p.n / 8);
            cfg.batch_end = Some(p.n / 2);
        }
        iht::fit(&mut b, p.n, &cfg, |_| std::ops::ControlFlow::Continue(())).unwrap();
        b.tile_bytes()
    };
    ((PEAK.load(Relaxed) - base) as u64, bound, tile)
}

#[test]
fn peak_memory_is_linear_in_s_and_n_not_m() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .ok();
    let s = 300;
    for budget in [0, 1 << 30] {
        for batched in [false, true] {
            check_peaks(s, budget, batched);
        }
    }
}

fn check_peaks(s: usize, budget: u64, batched: bool) {
    let (small, bound_small, _) = peak_of_fit(problem(64), s, budget, batched);
    let (large, bound_large, tile_large) = peak_of_fit(problem(65536), s, budget, batched);
    eprintln!("budget {budget}, minibatches {batched}: peak m=64: {small} B (bound {bound_small}); m=65536: {large} B (bound {bound_large}, tiles {tile_large})");
    assert!(small <= bound_small, "m=64: {small} > {bound_small}");
    assert!(large <= bound_large, "m=65536: {large} > {bound_large}");
    // 1024× more neurons: only the tile buffers and O(m) bookkeeping may grow.
    let m_d_bytes = 4 * 65536 * 64;
    assert!(
        large < m_d_bytes as u64,
        "peak {large} is as large as an m·d vector"
    );
    assert!(
        large.saturating_sub(small) <= tile_large + 16 * 65536,
        "peak grew by {} bytes from m=64 to m=65536",
        large - small
    );
}
