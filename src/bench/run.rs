//! One benchmark run: every kernel and a whole IHT step timed on a backend, with achieved
//! rates against the device's ceilings.

use super::counting::{CallCounts, Counting};
use super::timer::{time_call, time_call_from, DeviceTimes, Timing};
use super::work::{Work, WorkModel};
use super::BenchProblem;
use crate::backend::{Ceilings, Device, Slot};
use crate::error::Result;
use crate::iht::{self, IhtConfig};
use crate::problem::GateMode;
use std::time::Duration;

/// One kernel's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelReport {
    pub name: String,
    /// Per call: device time from timestamp queries where the backend has them (the sum of
    /// its dispatches), wall clock otherwise. The rates below use it.
    pub seconds: Timing,
    /// "gpu timestamps" or "wall clock".
    pub timer: String,
    /// Per call, wall clock: device time plus the host's share (recording, submission,
    /// readback round trips).
    pub wall_seconds: Timing,
    /// Where the device time went (timestamp runs only).
    pub device: Option<DeviceTimes>,
    pub flops: f64,
    pub bytes: f64,
    pub gflops_per_second: f64,
    pub gbytes_per_second: f64,
    /// Achieved FLOP/s over the FLOP ceiling, and bytes/s over the bandwidth ceiling.
    pub fraction_of_flops_ceiling: f64,
    pub fraction_of_bandwidth_ceiling: f64,
}

/// Options of a kernel run.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub warmup: usize,
    pub min_runs: usize,
    pub max_runs: usize,
    pub budget: Duration,
}

/// A call's timing turned into achieved rates (from its work model) against the ceilings.
fn report(
    name: &str,
    (t, timer, wall, device): (Timing, String, Timing, Option<DeviceTimes>),
    w: Work,
    c: &Ceilings,
) -> KernelReport {
    let sec = t.median.max(1e-12);
    KernelReport {
        name: name.to_string(),
        timer,
        wall_seconds: wall,
        device,
        gflops_per_second: w.flops / sec / 1e9,
        gbytes_per_second: w.bytes / sec / 1e9,
        fraction_of_flops_ceiling: w.flops / sec / c.flops_per_second,
        fraction_of_bandwidth_ceiling: w.bytes / sec / c.bytes_per_second,
        flops: w.flops,
        bytes: w.bytes,
        seconds: t,
    }
}

/// Times every kernel and one whole IHT step on `b`. Returns the kernels and the step timing.
pub fn run_kernels(
    b: &mut dyn Device,
    bp: &BenchProblem,
    ceilings: &Ceilings,
    opt: BenchOptions,
    mut on_kernel: impl FnMut(&KernelReport),
) -> Result<(Vec<KernelReport>, KernelReport)> {
    let model = WorkModel::new(bp);
    let s = bp.size.s;
    bp.prepare(b.as_backend())?;
    let mut out = Vec::new();
    let mut push = |r: KernelReport, out: &mut Vec<KernelReport>| {
        on_kernel(&r);
        out.push(r);
    };
    let t = time_call(b, opt, |b| b.forward(Slot::W).map(|_| ()))?;
    push(report("forward", t, model.forward(), ceilings), &mut out);
    let t = time_call(b, opt, |b| b.step_size(Slot::W, Slot::G).map(|_| ()))?;
    push(
        report("step_size", t, model.step_size(), ceilings),
        &mut out,
    );
    let t = time_call(b, opt, |b| {
        b.trial(Slot::W, Slot::G, Slot::TRIAL, 1e-3, true)
            .map(|_| ())
    })?;
    push(report("trial", t, model.trial(), ceilings), &mut out);
    b.forward(Slot::W)?;
    let t = time_call(b, opt, |b| {
        b.threshold(Slot::W, 1e-3, s, Slot::V)?;
        b.sync()
    })?;
    push(
        report("dense_pass_topk", t, model.threshold(), ceilings),
        &mut out,
    );

    // A whole step from the steady state: W and its gates reloaded before each run.
    let cfg = IhtConfig::new(s, 1, GateMode::Sequential);
    let mut counts = CallCounts::default();
    let step_opt = BenchOptions {
        min_runs: opt.min_runs.max(3),
        budget: Duration::ZERO,
        ..opt
    };
    let t = time_call_from(
        b,
        step_opt,
        |b| bp.prepare(b.as_backend()),
        |b| {
            let mut c = Counting {
                inner: b.as_backend(),
                counts: CallCounts::default(),
            };
            iht::step(&mut c, &cfg, false)?;
            counts = c.counts;
            Ok(())
        },
    )?;
    let w = model.forward() * counts.forward as f64
        + model.step_size() * counts.step_size as f64
        + model.trial() * counts.trial as f64
        + model.threshold() * counts.threshold as f64;
    let step = report("iht_step", t, w, ceilings);
    on_kernel(&step);
    Ok((out, step))
}
