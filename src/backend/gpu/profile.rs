//! The GPU backend's [`Profiler`] side: device timestamps per dispatch (`spinr bench`), the
//! wall-clock profile of each dispatch run alone, and the device's ceilings.

use super::timer::Timer;
use super::{ceilings, kernels, GpuBackend};
use crate::backend::profile::{Ceilings, GpuTimes, KernelTime, Profiler};
use crate::error::Result;

impl Profiler for GpuBackend {
    fn sync(&mut self) -> Result<()> {
        self.ctx.wait()
    }

    fn ceilings(&mut self) -> Result<Option<Ceilings>> {
        ceilings::measure(&self.ctx).map(Some)
    }

    fn set_timing(&mut self, on: bool) -> bool {
        if !on {
            self.kernels.timer = None;
            return Timer::available(&self.ctx);
        }
        if self.kernels.timer.is_none() {
            self.kernels.timer = Timer::new(&self.ctx, super::kernels::kernel_names());
        }
        self.kernels.timer.is_some()
    }

    fn take_times(&mut self) -> Option<GpuTimes> {
        self.kernels.timer.as_ref().map(|t| t.take())
    }

    fn dispatch_profile(&self) -> Option<Vec<KernelTime>> {
        let p = self.kernels.profile.as_ref()?.lock().ok()?;
        Some(
            p.iter()
                .enumerate()
                .filter(|(_, &(n, _))| n > 0)
                .map(|(i, &(n, t))| KernelTime {
                    name: kernels::kernel_name(i).to_string(),
                    dispatches: n,
                    seconds: t,
                })
                .collect(),
        )
    }
}
