//! Profiling of the GPU backend: device timestamps per dispatch (`spinr bench`), the
//! wall-clock profile of each dispatch run alone, and the device's ceilings.

use super::kernels;
use super::GpuBackend;

impl GpuBackend {
    /// Per-kernel dispatch counts and wall seconds, when the backend was created with
    /// `SPINR_GPU_PROFILE` set (each dispatch then runs alone: for finding hot kernels only).
    pub fn kernel_profile(&self) -> Option<Vec<(&'static str, u64, f64)>> {
        let p = self.kernels.profile.as_ref()?.lock().ok()?;
        Some(
            p.iter()
                .enumerate()
                .filter(|(_, &(n, _))| n > 0)
                .map(|(i, &(n, t))| (kernels::kernel_name(i), n, t))
                .collect(),
        )
    }
}

/// With `SPINR_GPU_PROFILE` set, the per-kernel wall-clock profile goes to stderr at the end
/// (the fallback where the adapter has no timestamp queries; `spinr bench` uses those).
impl Drop for GpuBackend {
    fn drop(&mut self) {
        if let Some(mut p) = self.kernel_profile() {
            p.sort_by(|a, b| b.2.total_cmp(&a.2));
            eprintln!("spinr: GPU profile (each dispatch alone, wall clock):");
            for (name, n, t) in p {
                eprintln!("  {name:<16} {n:>8} dispatches {:>12.3} ms", t * 1e3);
            }
        }
    }
}
