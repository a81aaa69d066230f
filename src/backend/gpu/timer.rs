//! Timestamp queries around every dispatch, for `spinr bench`: where the device time of a
//! call goes, per entry point, and how long the device idles between dispatches and between
//! submissions.

use super::buffers::OPS_PER_SUBMIT;
use super::context::GpuContext;
use crate::backend::profile::{GpuTimes, KernelTime};
use crate::error::{Error, Result};

/// Timestamp queries around every dispatch: each dispatch gets its own compute pass whose
/// begin and end are written to a query set, resolved and read back after each submission.
/// Per-dispatch passes add a little overhead, so benchmarks take wall-clock and GPU timings
/// in separate runs.
pub(crate) struct Timer {
    pub(crate) queries: wgpu::QuerySet,
    pub(crate) resolve: wgpu::Buffer,
    pub(crate) readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    /// Entry point names, by index.
    names: Vec<&'static str>,
    acc: std::sync::Mutex<TimerAcc>,
}

#[derive(Default)]
struct TimerAcc {
    /// Per entry point: (dispatches, GPU seconds).
    per_kernel: Vec<(u64, f64)>,
    busy: f64,
    dispatch_gaps: f64,
    submission_gaps: f64,
    submissions: u64,
    /// End of the last timed dispatch (ticks), to measure the idle time before the next
    /// submission starts.
    last_end: Option<u64>,
}

impl TimerAcc {
    fn new(entries: usize) -> Self {
        TimerAcc {
            per_kernel: vec![(0, 0.0); entries],
            ..Default::default()
        }
    }
}

impl Timer {
    pub fn available(ctx: &GpuContext) -> bool {
        ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// `None` where the device has no timestamp queries. `names`: the entry points, by the
    /// index that [`Timer::collect`] is given.
    pub fn new(ctx: &GpuContext, names: Vec<&'static str>) -> Option<Timer> {
        if !Self::available(ctx) {
            return None;
        }
        let count = 2 * OPS_PER_SUBMIT as u32;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("spinr timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("spinr timestamps resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("spinr timestamps readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Timer {
            queries,
            resolve,
            readback,
            period_ns: ctx.queue.get_timestamp_period() as f64,
            acc: std::sync::Mutex::new(TimerAcc::new(names.len())),
            names,
        })
    }

    /// Reads the timestamps of the last submission (its dispatches' entry points in order)
    /// and accumulates them.
    pub(crate) fn collect(&self, ctx: &GpuContext, jobs: &[usize]) -> Result<()> {
        let bytes = ctx.map_read(&self.readback, jobs.len() as u64 * 16)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let sec = |t: u64| t as f64 * self.period_ns * 1e-9;
        let mut acc = self
            .acc
            .lock()
            .map_err(|_| Error::Gpu("timer poisoned".into()))?;
        acc.submissions += 1;
        let mut prev_end = acc.last_end;
        for (i, &k) in jobs.iter().enumerate() {
            let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
            let dt = sec(t1.saturating_sub(t0));
            acc.per_kernel[k].0 += 1;
            acc.per_kernel[k].1 += dt;
            acc.busy += dt;
            if let Some(e) = prev_end {
                let gap = sec(t0.saturating_sub(e));
                if i == 0 {
                    acc.submission_gaps += gap;
                } else {
                    acc.dispatch_gaps += gap;
                }
            }
            prev_end = Some(t1);
        }
        acc.last_end = prev_end;
        Ok(())
    }

    /// What was measured since the last call, and a fresh start.
    pub fn take(&self) -> GpuTimes {
        let mut acc = match self.acc.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        let kernels = acc
            .per_kernel
            .iter()
            .enumerate()
            .filter(|(_, &(n, _))| n > 0)
            .map(|(i, &(n, t))| KernelTime {
                name: self.names[i].to_string(),
                dispatches: n,
                seconds: t,
            })
            .collect();
        let out = GpuTimes {
            busy_seconds: acc.busy,
            dispatch_gap_seconds: acc.dispatch_gaps,
            submission_gap_seconds: acc.submission_gaps,
            submissions: acc.submissions,
            kernels,
        };
        *acc = TimerAcc::new(self.names.len());
        out
    }
}
