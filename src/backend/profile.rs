//! The profiling side of a backend, apart from the compute trait: waiting for submitted work,
//! the device's ceilings, device timestamps per dispatch, the wall-clock profile of each
//! dispatch. `spinr bench` and the CLI use it; the fits see only [`Backend`].

use super::cpu::CpuBackend;
use super::Backend;
use crate::error::Result;
use std::time::Instant;

/// What the device can do at best, measured in the same run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ceilings {
    /// Bytes moved per second by a large buffer copy (read + write).
    pub bytes_per_second: f64,
    /// f32 FLOP/s of an FMA-bound kernel (a GEMM on the CPU).
    pub flops_per_second: f64,
    /// How they were measured.
    pub method: String,
}

/// Device-side times of the work submitted over some span, from timestamp queries.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GpuTimes {
    /// Sum of the dispatches' durations on the device.
    pub busy_seconds: f64,
    /// Device idle time between consecutive dispatches of one submission (launch, barrier).
    pub dispatch_gap_seconds: f64,
    /// Device idle time between the end of one submission and the start of the next: the
    /// host's share (recording, submitting, waiting for a readback, the driver loop).
    pub submission_gap_seconds: f64,
    pub submissions: u64,
    /// Per entry point, in kernel order.
    pub kernels: Vec<KernelTime>,
}

/// One entry point's share of [`GpuTimes`] (or of a wall-clock dispatch profile).
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    pub name: String,
    pub dispatches: u64,
    pub seconds: f64,
}

/// Timing and measurement hooks of a backend.
pub trait Profiler {
    /// Waits until submitted work has finished (a no-op on the CPU); used for wall-clock timing.
    fn sync(&mut self) -> Result<()>;

    /// The device's measured bandwidth and FLOP/s ceilings.
    fn ceilings(&mut self) -> Result<Option<Ceilings>>;

    /// Turns device timestamps around every dispatch on or off. Returns whether the backend
    /// has them (the GPU backend on an adapter with timestamp queries).
    fn set_timing(&mut self, on: bool) -> bool;

    /// Device times measured since the last call, while timing is on.
    fn take_times(&mut self) -> Option<GpuTimes>;

    /// Per entry point, the dispatches so far and their wall-clock seconds, each dispatch run
    /// and waited for alone, when the backend was created to profile them
    /// (`GpuOptions::profile_dispatches`): the fallback where an adapter has no timestamps.
    fn dispatch_profile(&self) -> Option<Vec<KernelTime>>;
}

/// A backend with its profiling side, as [`super::create`] returns it.
pub trait Device: Backend + Profiler {
    /// The compute side alone, for code written against `&mut dyn Backend`.
    fn as_backend(&mut self) -> &mut dyn Backend;
}

impl<T: Backend + Profiler> Device for T {
    fn as_backend(&mut self) -> &mut dyn Backend {
        self
    }
}

impl Profiler for CpuBackend {
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn ceilings(&mut self) -> Result<Option<Ceilings>> {
        Ok(Some(cpu_ceilings()))
    }

    fn set_timing(&mut self, _on: bool) -> bool {
        false
    }

    fn take_times(&mut self) -> Option<GpuTimes> {
        None
    }

    fn dispatch_profile(&self) -> Option<Vec<KernelTime>> {
        None
    }
}

/// Median wall seconds of `runs` calls of `f`, after one untimed call.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// CPU ceilings: a 256 MiB parallel copy and a 1024³ GEMM split over the threads.
pub fn cpu_ceilings() -> Ceilings {
    use rayon::prelude::*;
    let len = 64 << 20; // floats
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let chunk = len / rayon::current_num_threads().max(1) + 1;
    let copy = median_seconds(5, || {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    });
    let n = 1024;
    let a = vec![1.0f32; n * n];
    let bm = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads().max(1);
    let rows = n.div_ceil(threads);
    let gemm = median_seconds(3, || {
        c.par_chunks_mut(rows * n).enumerate().for_each(|(p, cc)| {
            let r = cc.len() / n;
            // SAFETY: row block p of A (r×n) times B (n×n) into cc (r×n), all in bounds.
            unsafe {
                matrixmultiply::sgemm(
                    r,
                    n,
                    n,
                    1.0,
                    a.as_ptr().add(p * rows * n),
                    n as isize,
                    1,
                    bm.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cc.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        });
    });
    Ceilings {
        bytes_per_second: 2.0 * 4.0 * len as f64 / copy,
        flops_per_second: 2.0 * (n as f64).powi(3) / gemm,
        method: format!(
            "parallel copy of {} MiB; {n}³ sgemm (matrixmultiply) on {threads} threads",
            (4 * len) >> 20
        ),
    }
}
