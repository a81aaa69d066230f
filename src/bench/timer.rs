//! A hyperfine-style timer: warm-up, repeated runs until a budget, median/min/max and outlier
//! counts, and device timestamps where the backend has them.

use super::BenchOptions;
use crate::backend::{Device, GpuTimes, KernelTime};
use crate::error::Result;
use std::time::Instant;

/// Summary of repeated timings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timing {
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
    /// Runs more than 3 median absolute deviations (and 10%) above the median.
    pub outliers: usize,
}

impl Timing {
    pub fn from_samples(mut t: Vec<f64>) -> Self {
        t.sort_by(|a, b| a.total_cmp(b));
        let n = t.len().max(1);
        let median = t.get(t.len() / 2).copied().unwrap_or(0.0);
        let mean = t.iter().sum::<f64>() / n as f64;
        let stddev = (t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let mut dev: Vec<f64> = t.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(|a, b| a.total_cmp(b));
        let mad = dev.get(dev.len() / 2).copied().unwrap_or(0.0);
        let outliers = t
            .iter()
            .filter(|&&x| x > median + 3.0 * mad && x > 1.1 * median)
            .count();
        Timing {
            runs: t.len(),
            median,
            min: t.first().copied().unwrap_or(0.0),
            max: t.last().copied().unwrap_or(0.0),
            mean,
            stddev,
            outliers,
        }
    }
}

/// Device-side breakdown of one call, averaged over the timestamp runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceTimes {
    pub submissions: f64,
    /// Device idle between dispatches of one submission (launches, barriers; each timed
    /// dispatch is its own pass, which adds a little).
    pub dispatch_gap_seconds: f64,
    /// Device idle between submissions: the host's share of the call.
    pub submission_gap_seconds: f64,
    /// Per entry point: dispatches and device seconds per call.
    pub kernels: Vec<KernelTime>,
}

/// Wall-clock timing of `f`, then (where `b` has timestamps) `runs` more runs with device
/// timestamps on: (primary timing, timer name, wall timing, device breakdown).
pub(super) fn time_call(
    b: &mut dyn Device,
    opt: BenchOptions,
    f: impl FnMut(&mut dyn Device) -> Result<()>,
) -> Result<(Timing, String, Timing, Option<DeviceTimes>)> {
    time_call_from(b, opt, |_| Ok(()), f)
}

/// [`time_call`] with an untimed `setup` before every run.
pub(super) fn time_call_from(
    b: &mut dyn Device,
    opt: BenchOptions,
    mut setup: impl FnMut(&mut dyn Device) -> Result<()>,
    mut f: impl FnMut(&mut dyn Device) -> Result<()>,
) -> Result<(Timing, String, Timing, Option<DeviceTimes>)> {
    for _ in 0..opt.warmup {
        setup(&mut *b)?;
        f(&mut *b)?;
        b.sync()?;
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < opt.min_runs
        || (start.elapsed() < opt.budget && samples.len() < opt.max_runs)
    {
        setup(&mut *b)?;
        b.sync()?;
        let t = Instant::now();
        f(&mut *b)?;
        b.sync()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    let wall = Timing::from_samples(samples);
    if !b.set_timing(true) {
        return Ok((wall.clone(), "wall clock".into(), wall, None));
    }
    let runs = opt.min_runs.max(3);
    let mut busy = Vec::with_capacity(runs);
    let mut total = GpuTimes::default();
    let mut per: Vec<KernelTime> = Vec::new();
    let result = (|| -> Result<()> {
        setup(&mut *b)?;
        f(&mut *b)?; // warm the timed path (query set, per-dispatch passes)
        for _ in 0..runs {
            setup(&mut *b)?;
            b.sync()?;
            b.take_times();
            f(&mut *b)?;
            b.sync()?;
            let t = b.take_times().unwrap_or_default();
            busy.push(t.busy_seconds);
            total.dispatch_gap_seconds += t.dispatch_gap_seconds;
            total.submission_gap_seconds += t.submission_gap_seconds;
            total.submissions += t.submissions;
            for k in t.kernels {
                match per.iter_mut().find(|p| p.name == k.name) {
                    Some(p) => {
                        p.dispatches += k.dispatches;
                        p.seconds += k.seconds;
                    }
                    None => per.push(k),
                }
            }
        }
        Ok(())
    })();
    b.set_timing(false);
    result?;
    let r = runs as f64;
    for p in &mut per {
        p.dispatches = (p.dispatches as f64 / r).round() as u64;
        p.seconds /= r;
    }
    let device = DeviceTimes {
        submissions: total.submissions as f64 / r,
        dispatch_gap_seconds: total.dispatch_gap_seconds / r,
        submission_gap_seconds: total.submission_gap_seconds / r,
        kernels: per,
    };
    Ok((
        Timing::from_samples(busy),
        "gpu timestamps".into(),
        wall,
        Some(device),
    ))
}
