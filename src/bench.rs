//! Throughput measurement: problem sizes, a hyperfine-style timer (warm-up, median/min/max,
//! outlier warnings), device ceilings and per-kernel FLOP and byte models.

use crate::backend::{Backend, Ceilings, Device, GateSource, GpuTimes, KernelTime, Slot};
use crate::error::{Error, Result};
use crate::iht::{self, IhtConfig};
use crate::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use crate::sparse::SparseVec;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A benchmark problem size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BenchSize {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub s: usize,
}

impl BenchSize {
    /// INR of a 28×28 digit with the paper's settings.
    pub const SMALL: BenchSize = BenchSize {
        n: 784,
        d: 1500,
        m: 200,
        s: 1000,
    };
    /// A 512×512 image.
    pub const LARGE: BenchSize = BenchSize {
        n: 262_144,
        d: 512,
        m: 2048,
        s: 20_000,
    };

    /// `small`, `large` or `N,D,M,S`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "small" => Ok(Self::SMALL),
            "large" => Ok(Self::LARGE),
            _ => {
                let v: Vec<usize> = text
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| {
                        Error::arg("--size", format!("'{text}' is not small, large or N,D,M,S"))
                    })?;
                if v.len() != 4 {
                    return Err(Error::arg(
                        "--size",
                        format!("'{text}' is not small, large or N,D,M,S"),
                    ));
                }
                let s = BenchSize {
                    n: v[0],
                    d: v[1],
                    m: v[2],
                    s: v[3],
                };
                if s.n == 0 || s.d < 2 || s.d % 2 != 0 || s.m == 0 || s.s == 0 || s.s > s.m * s.d {
                    return Err(Error::arg(
                        "--size",
                        "need N ≥ 1, even D ≥ 2, M ≥ 1 and 1 ≤ S ≤ M·D",
                    ));
                }
                Ok(s)
            }
        }
    }
}

/// An INR-shaped problem in the steady state of a sequential fit: Fourier features of a grid,
/// a smooth target, and `s` random weights that also serve as the gates.
pub struct BenchProblem {
    pub size: BenchSize,
    pub problem: Arc<Problem>,
    pub w: SparseVec,
}

impl BenchProblem {
    pub fn new(size: BenchSize) -> Result<Self> {
        // A square grid when n is a square, otherwise one axis of n samples.
        let side = (size.n as f64).sqrt().round() as usize;
        let axes = if side * side == size.n {
            vec![side, side]
        } else {
            vec![size.n]
        };
        let spec = FourierSpec {
            d: size.d,
            seed: 1,
            sigma: vec![10.0; axes.len()],
            coords: vec![AxisCoords::Unit; axes.len()],
            constant_feature: true,
        };
        let grid = spec.grid(&axes)?;
        let y: Vec<f32> = (0..size.n)
            .map(|i| 0.5 + 0.4 * ((i as f32) * 0.013).sin() * ((i as f32) * 0.0007).cos())
            .collect();
        let problem = Arc::new(Problem::new(
            size.d,
            size.m,
            Features::Grid(grid),
            y,
            GateMode::Sequential,
            2,
        )?);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let idx = rand::seq::index::sample(&mut rng, size.m * size.d, size.s);
        let w = SparseVec::from_pairs(
            idx.into_iter()
                .map(|i| {
                    (
                        i as u32,
                        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng),
                    )
                })
                .map(|(i, v): (u32, f32)| (i, v * 0.05))
                .collect(),
        );
        Ok(Self { size, problem, w })
    }

    /// Loads `w` into `W` and as the gates (as the sequential driver does after each step),
    /// and makes its residual current.
    pub fn prepare(&self, b: &mut dyn Backend) -> Result<()> {
        b.set_batch(None)?;
        b.load(Slot::W, &self.w)?;
        b.set_gates(GateSource::Slot(Slot::W))?;
        b.forward(Slot::W)?;
        Ok(())
    }

    /// Neurons with at least one weight (those the dense pass visits).
    pub fn active_neurons(&self) -> usize {
        self.w.active_neurons(self.size.d)
    }
}

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

/// Runs `f` `warmup` times untimed, then at least `min_runs` times and until `budget` is spent
/// (at most `max_runs`).
pub fn time_it(
    warmup: usize,
    min_runs: usize,
    max_runs: usize,
    budget: Duration,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < min_runs || (start.elapsed() < budget && samples.len() < max_runs) {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok(Timing::from_samples(samples))
}

/// Floating-point work and compulsory memory traffic of one call, from the problem's shape.
/// Features are generated on the fly and not counted as traffic.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            flops: self.flops + o.flops,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::ops::Mul<f64> for Work {
    type Output = Work;
    fn mul(self, k: f64) -> Work {
        Work {
            flops: self.flops * k,
            bytes: self.bytes * k,
        }
    }
}

/// Per-call work models for a sequential-gate step (`s` gate entries as well as `s` weights).
pub struct WorkModel {
    pub n: f64,
    pub d: f64,
    pub s: f64,
    pub active: f64,
}

impl WorkModel {
    pub fn new(bp: &BenchProblem) -> Self {
        WorkModel {
            n: bp.size.n as f64,
            d: bp.size.d as f64,
            s: bp.size.s as f64,
            active: bp.active_neurons() as f64,
        }
    }
    /// `A_S v − y`: a gate dot and a value dot per (sample, support entry).
    pub fn forward(&self) -> Work {
        Work {
            flops: 4.0 * self.n * self.s,
            bytes: 8.0 * self.n + 16.0 * self.s,
        }
    }
    /// `A_Sᵀ r` then `‖A_S g‖²`.
    pub fn step_size(&self) -> Work {
        self.forward() * 2.0
    }
    /// Gradient (when recomputed), axpy, trial forward.
    pub fn trial(&self) -> Work {
        self.forward() * 2.0
    }
    /// `X_tileᵀ (D ∘ r)` for every active neuron, top-s over the candidates. The gates of a
    /// sequential step are not counted: they are the support passes' cached mask (the GPU
    /// reuses it; with other gates the dense pass evaluates them, uncounted here).
    pub fn threshold(&self) -> Work {
        Work {
            flops: 2.0 * self.n * self.d * self.active,
            bytes: 4.0 * self.n + 8.0 * self.active * self.d + 16.0 * self.s,
        }
    }
}

/// Counts the calls a step makes, to turn per-call models into per-step work.
#[derive(Default, Debug, Clone, Copy)]
pub struct CallCounts {
    pub forward: usize,
    pub step_size: usize,
    pub trial: usize,
    pub threshold: usize,
}

/// A backend wrapper that counts calls (the step's work = Σ calls × per-call models).
pub struct Counting<'a> {
    pub inner: &'a mut dyn Backend,
    pub counts: CallCounts,
}

impl Backend for Counting<'_> {
    fn info(&self) -> crate::backend::BackendInfo {
        self.inner.info()
    }
    fn load(&mut self, slot: Slot, w: &SparseVec) -> Result<()> {
        self.inner.load(slot, w)
    }
    fn read(&mut self, slot: Slot) -> Result<SparseVec> {
        self.inner.read(slot)
    }
    fn copy(&mut self, dst: Slot, src: Slot) -> Result<()> {
        self.inner.copy(dst, src)
    }
    fn set_gates(&mut self, gates: GateSource) -> Result<()> {
        self.inner.set_gates(gates)
    }
    fn set_batch(&mut self, batch: Option<&[u32]>) -> Result<()> {
        self.inner.set_batch(batch)
    }
    fn forward(&mut self, v: Slot) -> Result<f64> {
        self.counts.forward += 1;
        self.inner.forward(v)
    }
    fn step_size(&mut self, v: Slot, g: Slot) -> Result<(f64, f64)> {
        self.counts.step_size += 1;
        self.inner.step_size(v, g)
    }
    fn trial(
        &mut self,
        v: Slot,
        g: Slot,
        dst: Slot,
        mu: f32,
        recompute_grad: bool,
    ) -> Result<(f64, f64)> {
        self.counts.trial += 1;
        self.inner.trial(v, g, dst, mu, recompute_grad)
    }
    fn accept_trial(&mut self) -> Result<()> {
        self.inner.accept_trial()
    }
    // A gradient is about the work of a step size (which adds one apply), a curvature that of
    // a forward pass.
    fn gradient(&mut self, v: Slot, g: Slot) -> Result<f64> {
        self.counts.step_size += 1;
        self.inner.gradient(v, g)
    }
    fn curvature(&mut self, p: Slot) -> Result<f64> {
        self.counts.forward += 1;
        self.inner.curvature(p)
    }
    fn combine(&mut self, dst: Slot, a: Slot, b: Slot, beta: f32) -> Result<()> {
        self.inner.combine(dst, a, b, beta)
    }
    fn refine_exact(
        &mut self,
        v: Slot,
        g: Slot,
        trial: Slot,
        f_v: f64,
        steps: usize,
    ) -> Result<Vec<crate::backend::RefineStep>> {
        // Forwarded (the inner backend's own version runs), counted as the work it replaces.
        let recs = self.inner.refine_exact(v, g, trial, f_v, steps)?;
        self.counts.step_size += recs.len();
        self.counts.trial += recs.len();
        Ok(recs)
    }
    fn threshold(&mut self, w: Slot, mu: f32, s: usize, dst: Slot) -> Result<()> {
        self.counts.threshold += 1;
        self.inner.threshold(w, mu, s, dst)
    }
    fn predict(&mut self, v: Slot) -> Result<Vec<f32>> {
        self.inner.predict(v)
    }
    fn memory(&self) -> crate::backend::MemoryStats {
        self.inner.memory()
    }
}

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
fn time_call(
    b: &mut dyn Device,
    opt: BenchOptions,
    f: impl FnMut(&mut dyn Device) -> Result<()>,
) -> Result<(Timing, String, Timing, Option<DeviceTimes>)> {
    time_call_from(b, opt, |_| Ok(()), f)
}

/// [`time_call`] with an untimed `setup` before every run.
fn time_call_from(
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

/// Options of a kernel run.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub warmup: usize,
    pub min_runs: usize,
    pub max_runs: usize,
    pub budget: Duration,
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
